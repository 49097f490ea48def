"""In a real browser: the debugger on an s3:// checkpoint (moto's S3 server on loopback,
through the real s3fs client) shows the same headline as on the local copy, and
``dbg.export()`` run in a cell puts the code in a new cell below it."""

from __future__ import annotations

import pytest
from _browser import (
    browser_page,
    lab_with,
    require,
    run_notebook,
    shot,
)

pytestmark = pytest.mark.browser

CELLS = [
    """\
import boto3, torch
from torch import nn
from moto.server import ThreadedMotoServer
import ckwidget as ck

moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
moto.start()
endpoint = f"http://127.0.0.1:{moto._server.server_port}"
options = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint,
           "region_name": "us-east-1"}}
net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
torch.save({"module." + k: v for k, v in net.state_dict().items()}, "dp.pt")
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket="ckpts")
s3.upload_file("dp.pt", "ckpts", "run/dp.pt")""",
    "local = ck.debug('dp.pt', net, model_name='net')\nlocal",
    "remote = ck.debug('s3://ckpts/run/dp.pt', net, model_name='net', "
    "storage_options=options)\nremote",
    "remote.export()",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require("moto", "s3fs", "boto3")
    with lab_with(tmp_path_factory.mktemp("remote"), "remote.ipynb", CELLS) as url:
        yield url


def test_an_s3_checkpoint_reads_as_the_local_one_and_export_makes_a_cell(lab) -> None:
    from playwright.sync_api import expect

    with browser_page("failure-remote.png") as b:
        page = b.page
        roots = run_notebook(page, lab, "remote.ipynb", expect, debuggers=2)
        local, remote = roots.nth(0), roots.nth(1)
        expect(remote.locator(".ck-file").first).to_contain_text("s3://ckpts/run/dp.pt")
        local_headline = local.locator(".ck-headline").first.text_content()
        assert "0 of 4 model tensors would load as is" in local_headline
        expect(remote.locator(".ck-headline").first).to_have_text(local_headline)
        remote.scroll_into_view_if_needed()
        shot(remote, "remote-s3.png")
        # dbg.export() in a cell: a new cell below it holds the snippet, which reads the
        # object through fsspec
        cells = page.locator(".jp-Notebook .jp-Cell")
        expect(cells).to_have_count(len(CELLS) + 1, timeout=30_000)
        new = cells.nth(len(CELLS)).inner_text()
        assert "fsspec.open" in new and "load_state_dict" in new, new
    b.check_clean()
