"""binder/ agrees with the project: the same torch as the test script, pins inside
pyproject.toml's ranges, a postBuild that installs the package without touching
torch, and a README badge that opens the quickstart in JupyterLab."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
BADGE = re.compile(
    r"\[!\[[^\]]*\]\(https://mybinder\.org/badge_logo\.svg\)\]"
    r"\(https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/[\w./-]+"
    r"\?urlpath=lab/tree/notebooks/01_quickstart\.ipynb\)"
)


def binder_pins() -> dict[str, Requirement]:
    pins = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        pins[canonicalize_name(req.name)] = req
    return pins


def pinned_version(req: Requirement) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not pinned with =="
    return Version(specs[0].version)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def script_torch_pin() -> Version:
    found = re.findall(r"torch==([\w.+]+)", (ROOT / "scripts" / "test").read_text())
    assert found, "scripts/test no longer pins torch"
    return Version(found[0])


def test_every_requirement_line_is_pinned() -> None:
    pins = binder_pins()
    assert pins, "binder/requirements.txt lists nothing"
    for req in pins.values():
        pinned_version(req)


def test_pins_cover_and_satisfy_pyproject() -> None:
    project = pyproject()["project"]
    wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["demo"])
    pins = binder_pins()
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in pins, f"binder/requirements.txt does not pin {spec.name}"
        version = pinned_version(pins[name])
        assert spec.specifier.contains(version, prereleases=True), (
            f"binder pins {spec.name}=={version}, outside pyproject's {spec}")


def test_notebook_libraries_are_in_binder_and_the_test_extra() -> None:
    """03_real_world imports transformers and Lightning: CI (the test extra) and Binder
    both install them, Binder's pin inside the test extra's range."""
    test_extra = {canonicalize_name(r.name): r for r in
                  map(Requirement, pyproject()["project"]["optional-dependencies"]["test"])}
    pins = binder_pins()
    for name in ("transformers", "pytorch-lightning"):
        assert name in pins, f"binder/requirements.txt does not pin {name} (03_real_world)"
        assert name in test_extra, f"pyproject's test extra lacks {name} (03_real_world)"
        assert test_extra[name].specifier.contains(pinned_version(pins[name]))


def test_torch_is_the_cpu_build_of_the_tested_version() -> None:
    torch = binder_pins()["torch"]
    version = pinned_version(torch)
    assert version.public == script_torch_pin().public == "2.13.0"
    assert version.local in (None, "cpu")
    text = (BINDER / "requirements.txt").read_text()
    assert re.search(r"^--(extra-)?index-url \S+/whl/cpu\s*$", text, re.M), (
        "binder/requirements.txt must name the PyTorch CPU wheel index")


def test_runtime_is_python_311() -> None:
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_postbuild_installs_the_package_without_touching_torch() -> None:
    post = BINDER / "postBuild"
    text = post.read_text()
    assert text.startswith("#!"), "postBuild needs a shebang"
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    mode = subprocess.run(["git", "ls-files", "-s", "binder/postBuild"], cwd=ROOT,
                          capture_output=True, text=True).stdout
    assert not mode or mode.startswith("100755"), "postBuild is committed without +x"
    assert "set -e" in text
    installs = [line for line in text.splitlines()
                if re.search(r"\bpip install\b", line) and not line.lstrip().startswith("#")]
    assert len(installs) == 1, installs
    assert re.search(r"-e \.(\s|$)", installs[0]), "postBuild must `pip install -e .`"
    assert "--no-deps" in installs[0], "without --no-deps pip may replace the CPU torch"
    assert "--upgrade" not in installs[0] and " -U" not in installs[0]
    assert "torch" not in "\n".join(installs)
    assert subprocess.run(["bash", "-n", str(post)]).returncode == 0


def test_readme_badge_opens_the_quickstart_in_jupyterlab() -> None:
    readme = (ROOT / "README.md").read_text()
    assert BADGE.search(readme), (
        "README.md needs the Binder badge: [![Binder](https://mybinder.org/badge_logo.svg)]"
        "(https://mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=lab/tree/notebooks/"
        "01_quickstart.ipynb)")
