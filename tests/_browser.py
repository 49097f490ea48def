"""Shared pieces of the real-browser tests (JupyterLab, Notebook 7, Voila).

Each test module starts one server (JupyterLab, Notebook or Voila) on a free loopback
port, serving a temp copy of the quickstart notebook, and drives Debian's Chromium
through Playwright. Needs /usr/bin/chromium (``apt-get install -y chromium``) and the
``playwright`` Python package (never ``playwright install``). Without them the tests are
skipped, unless CKWIDGET_REQUIRE_BROWSER=1 (CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
HOSTILE = "<img src=x onerror=alert(1)>"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
# Every server: loopback only, no token or password, no XSRF check, run as root.
SERVER_FLAGS = [
    "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
    "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", "--allow-root",
]

HOSTILE_CELL = f'''\
hostile = dict(trained.state_dict())
hostile["module.{HOSTILE}"] = torch.tensor([1.0, float("nan")])
torch.save(hostile, "hostile.pth")
dbg2 = %ckdebug hostile.pth model'''


def missing_tools() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


def require(*modules: str) -> None:
    """Skip (or, with CKWIDGET_REQUIRE_BROWSER=1, fail) when a tool is missing."""
    why = missing_tools()
    for name in modules:
        if why:
            break
        try:
            __import__(name)
        except ImportError:
            why = f"the {name} package is not installed (pip install {name})"
    if why:
        if os.environ.get("CKWIDGET_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


def quickstart(folder: Path, hostile: bool = False) -> Path:
    """A copy of notebooks/01_quickstart.ipynb in ``folder``; ``hostile`` adds a second
    debugger on a checkpoint whose key is an HTML tag, right after the first."""
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    if hostile:
        at = next(i for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and "%ckdebug" in c.source) + 1
        nb.cells.insert(at, nbformat.v4.new_code_cell(HOSTILE_CELL))
    path = folder / "quickstart.ipynb"
    nbformat.write(nb, path)
    return path


def lab_settings(folder: Path) -> Path:
    """JupyterLab/Notebook settings: every cell kept in the DOM, no news toasts."""
    settings = folder / ".settings"
    nb_ext = settings / "@jupyterlab" / "notebook-extension"
    nb_ext.mkdir(parents=True)
    (nb_ext / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    app_ext = settings / "@jupyterlab" / "apputils-extension"
    app_ext.mkdir(parents=True)
    (app_ext / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(folder: Path, **extra: str) -> dict[str, str]:
    """An environment that keeps Jupyter's runtime and config files inside ``folder``."""
    return dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(folder / ".runtime"),
        JUPYTER_CONFIG_DIR=str(folder / ".config"),
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **extra,
    )


@contextmanager
def server(argv: Sequence[str], folder: Path, port: int, env: dict[str, str],
           ready_path: str | None = "/api/status", timeout: float = 60) -> Iterator[str]:
    """Run ``python -m <argv>`` in ``folder`` until the block ends; yields its base URL.

    Ready when ``ready_path`` answers 200, or (``ready_path=None``, for servers where
    every page starts a kernel) when the port accepts connections.
    """
    log_path = folder / "server.log"
    log = open(log_path, "w")  # closed below
    proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=folder, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while not _ready(url, port, ready_path):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{argv[0]} did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _ready(url: str, port: int, path: str | None) -> bool:
    if path is None:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0
    try:
        with urllib.request.urlopen(url + path, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Browser:
    """One Chromium page that records console errors and script dialogs."""

    def __init__(self, playwright, failure_shot: str, width: int = 1300, height: int = 1700):
        self.failure_shot = failure_shot
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": width, "height": height})
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.console_errors.append(
            f"page error: {e} {e.stack}"))
        self.page.on("dialog", self._dialog)
        self.page.on("requestfailed", lambda r: self.console_errors.append(
            f"request failed: {r.url} ({r.failure})"))

    def offline(self) -> list[str]:
        """Answer requests to other hosts with an empty body (this machine has no
        internet; Voila's template links Font Awesome from a CDN although its bundle
        already has it). Returns the list the skipped URLs are recorded in."""
        skipped: list[str] = []

        def handle(route) -> None:
            skipped.append(route.request.url)
            route.fulfill(status=200, body="", content_type="text/css")

        self.page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), handle)
        return skipped

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.console_errors.append(msg.text)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def check_clean(self, known: Sequence[str] = ()) -> None:
        """No script dialog and no console error, except ``known`` front-end bugs
        (regular expressions over the error and its stack, each seen without ckwidget)."""
        assert not self.dialogs, f"a script ran from the page: {self.dialogs}"
        errors = [e for e in self.console_errors
                  if not any(re.search(k, e, re.S) for k in known)]
        assert not errors, "browser console errors:\n" + "\n".join(errors)


@contextmanager
def browser_page(failure_shot: str) -> Iterator[Browser]:
    """A fresh Chromium page; a full-page screenshot is saved if the block fails."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = Browser(p, failure_shot)
        try:
            yield b
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            try:
                b.page.screenshot(path=str(ARTIFACTS / failure_shot), full_page=True)
            except Exception:  # the original failure matters more
                pass
            raise
        finally:
            b.browser.close()


def shot(locator, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    locator.screenshot(path=str(ARTIFACTS / name))


def tab(root, title: str):
    """Click a tab of the widget's ipywidgets Tab (a Lumino tab bar in every front end)."""
    t = root.locator(".lm-TabBar-tab", has_text=title).first
    t.click()
    return t


def toggle_changes_headline(root, expect) -> None:
    """Untick the strip-prefix fix: the headline changes before anything is applied."""
    headline = root.locator(".ck-headline")
    tab(root, "Fix & export")
    toggle = root.locator(".ck-fix-strip-prefix input[type=checkbox]")
    expect(toggle).to_be_checked()
    before = headline.inner_text()
    toggle.uncheck()
    expect(headline).not_to_have_text(before, timeout=30_000)
    expect(headline).to_contain_text("With this fix")
    toggle.check()
    expect(headline).to_contain_text("With these 2 fixes", timeout=30_000)


def accept_dialog(page, timeout_ms: int = 3_000) -> None:
    """Click the accept button of a JupyterLab dialog ("Select Kernel", a confirmation)
    if one shows within ``timeout_ms``; nothing when none does."""
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        accept.wait_for(timeout=timeout_ms)
        accept.click()
    except Exception:  # no dialog: fine
        pass


def open_notebook(page, url: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab and accept the kernel dialog if one shows."""
    page.goto(f"{url}/lab/tree/{notebook}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    accept_dialog(page)


KERNEL_IDLE_SELECTOR = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'


def run_notebook(page, url: str, notebook: str, expect, debuggers: int,
                 wait_ms: int = 120_000):
    """Open ``notebook`` in JupyterLab, accept the kernel dialog if one shows, run every
    cell and wait (up to ``wait_ms``) for ``debuggers`` widgets and an idle kernel;
    returns their roots."""
    open_notebook(page, url, notebook)
    page.wait_for_selector(KERNEL_IDLE_SELECTOR, timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    roots = page.locator(".ck-root")
    expect(roots).to_have_count(debuggers, timeout=wait_ms)
    page.wait_for_selector(KERNEL_IDLE_SELECTOR, timeout=wait_ms)
    return roots


@contextmanager
def lab_server(folder: Path) -> Iterator[str]:
    """JupyterLab on a free loopback port serving ``folder``, with its own settings and
    workspaces (and ``window.jupyterapp`` exposed for the tests); yields its URL."""
    settings = lab_settings(folder)
    env = server_env(folder, JUPYTERLAB_SETTINGS_DIR=str(settings),
                     JUPYTERLAB_WORKSPACES_DIR=str(folder / ".workspaces"))
    port = free_port()
    argv = ["jupyterlab", "--no-browser", f"--port={port}", f"--ServerApp.root_dir={folder}",
            "--LabApp.expose_app_in_browser=True", *SERVER_FLAGS]
    with server(argv, folder, port, env) as url:
        yield url


@contextmanager
def lab_with(folder: Path, name: str, cells: Sequence[str]) -> Iterator[str]:
    """JupyterLab on a free loopback port serving ``folder``, where notebook ``name``
    holds ``cells``; yields the server's URL."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, folder / name)
    with lab_server(folder) as url:
        yield url
