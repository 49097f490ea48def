"""Plain-torch code for a plan: the snippet a user pastes into their own training script.

The snippet does exactly what :meth:`Plan.apply` does (the tests run both and compare
the model state bit for bit): ``torch.load(..., weights_only=True)`` or safetensors'
``load_file``, the entry, the fixes as dict comprehensions, ``load_state_dict`` with
the same strict/assign, and a printed summary. Only extract-weights, and formats that
plain torch cannot read, call ckwidget.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoint import Checkpoint
from ..errors import CheckpointError
from .apply import meta_model
from .kinds import CodeContext, ExtractWeights, RenameKeys, entry_expr

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .plan import Plan

TORCH_FORMATS = ("torch-zip", "torch-legacy", "torch-pickle", "in-memory")
INDEX_FILES = (
    "model.safetensors.index.json", "pytorch_model.bin.index.json",
    "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json",
)


def _format_of(plan: Plan) -> tuple[str | None, Checkpoint | None]:
    """The checkpoint's format, opening a path source (metadata only) if needed."""
    if isinstance(plan.source, Checkpoint):
        return plan.source.format, plan.source
    if plan.source is None:
        return None, None
    try:
        ckpt, _ = plan.open()
    except CheckpointError:
        return None, None
    return ckpt.format, ckpt


def _index_name(path: Path, ckpt: Checkpoint | None) -> str:
    if ckpt is not None and isinstance(ckpt.metadata.get("index"), str):
        return ckpt.metadata["index"]
    for name in INDEX_FILES:
        if (path / name).exists():
            return name
    found = sorted(p.name for p in path.glob("*.index.json")) if path.is_dir() else []
    return found[0] if found else INDEX_FILES[0]


def _global_imports(names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``from module import name`` lines and the ``(object, "name.in.file")`` pairs to pass
    to safe_globals. The object is imported from where it lives in this environment
    (numpy 2 keeps ``numpy.core``'s objects in ``numpy._core``), and the pair carries the
    exact name the file uses, which is what torch's weights-only loader compares."""
    lines, refs, used = [], [], set()
    for dotted in names:
        module, name = _living_module(dotted), dotted.rsplit(".", 1)[1]
        alias = name
        n = 2
        while alias in used:
            alias = f"{name}_{n}"
            n += 1
        used.add(alias)
        lines.append(f"from {module} import {name}" + (f" as {alias}" if alias != name else ""))
        refs.append(f"({alias}, {dotted!r})")
    return lines, refs


def _living_module(dotted: str) -> str:
    """The module to import a vetted global from here, for a name as a file spells it."""
    module = dotted.rsplit(".", 1)[0]
    if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        import numpy

        major = int(numpy.__version__.split(".", 1)[0])
        return "numpy._core.multiarray" if major >= 2 else "numpy.core.multiarray"
    return module


def generate(
    plan: Plan,
    model_name: str = "model",
    path: str | os.PathLike[str] | None = None,
    model: nn.Module | None = None,
) -> str:
    """The snippet. ``model`` (optional) lets it choose ``assign=True`` for meta models."""
    if not model_name.isidentifier():
        model_name = "model"
    fmt, ckpt = _format_of(plan)
    where = Path(path) if path is not None else plan.path
    path_literal = repr(str(where)) if where is not None else "'checkpoint.pt'"
    # a remote checkpoint (issue 22): read whole through fsspec, with its options
    url = ckpt.metadata.get("url") if ckpt is not None and path is None else None
    opened = ""
    if url is not None:
        path_literal = repr(url)
        keys = ckpt.metadata.get("storage_options_keys") or []
        opened = ", **storage_options" if keys else ""
    ctx = CodeContext(model=model_name)
    location = plan.map_location
    imports = ["import torch"]
    if any(isinstance(f, RenameKeys) and f.patterns for f in plan.fixes):
        imports.insert(0, "import re")
    read: list[str] = []
    entry = plan.entry or ""

    if url is not None:
        imports.append("import fsspec")
        read.append(f"# This reads the whole checkpoint ({ckpt.size:,} bytes) over the "
                    "network: it downloads it.")
        if opened:
            read.append("storage_options = {" + ", ".join(f"{k!r}: ..." for k in keys)
                        + "}  # the storage_options you opened it with")
    if plan.extracts:
        imports.append("import ckwidget  # plain torch cannot read this file without running it")
        source = f"ckwidget.open_checkpoint(PATH{', storage_options' if opened else ''})" if (
            url) else "PATH"
        args = f"{source}, map_location={location!r}" + (f", entry={entry!r}" if entry else "")
        why = next((f.why for f in plan.fixes if isinstance(f, ExtractWeights) and f.why), "")
        read.append("# torch.load(weights_only=True) cannot read this file"
                    + (f" ({_one_line(why)})" if why else "")
                    + "; ckwidget's reader takes the tensors and runs nothing from it.")
        read.append(f"sd = ckwidget.extract_weights({args})")
    elif fmt == "safetensors" and url is not None:
        imports.append("from safetensors.torch import load")
        read += [f'with fsspec.open(PATH, "rb"{opened}) as f:', "    sd = load(f.read())"]
        if str(location) != "cpu":
            read.append(f"sd = {{k: v.to({location!r}) for k, v in sd.items()}}")
    elif fmt == "safetensors" and not (where is not None and Path(where).is_dir()):
        imports.append("from safetensors.torch import load_file")
        read.append(f"sd = load_file(PATH, device={location!r})")
    elif fmt == "hf-sharded" and url is not None:
        index = _index_name(Path(), ckpt)
        imports.insert(0, "import json")
        safetensors = index.endswith(".safetensors.index.json")
        if safetensors:
            imports.append("from safetensors.torch import load")
        read += [f'with fsspec.open(PATH + "/" + {index!r}, "r"{opened}) as f:',
                 "    index = json.load(f)", "sd = {}",
                 'for shard in sorted(set(index["weight_map"].values())):',
                 f'    with fsspec.open(PATH + "/" + shard, "rb"{opened}) as f:']
        read.append("        sd.update(load(f.read()))" if safetensors else
                    f"        sd.update(torch.load(f, map_location={location!r}, "
                    "weights_only=True))")
        if safetensors and str(location) != "cpu":
            read.append(f"sd = {{k: v.to({location!r}) for k, v in sd.items()}}")
    elif fmt == "hf-sharded" and where is not None:
        index = _index_name(Path(where), ckpt)
        imports[0:0] = ["import json", "import os"]
        safetensors = index.endswith(".safetensors.index.json")
        if safetensors:
            imports.append("from safetensors.torch import load_file")
        read += [
            f"with open(os.path.join(PATH, {index!r})) as f:",
            "    index = json.load(f)",
            "sd = {}",
            'for shard in sorted(set(index["weight_map"].values())):',
        ]
        if safetensors:
            read.append(f"    sd.update(load_file(os.path.join(PATH, shard), device={location!r}))")
        else:
            read.append(
                "    sd.update(torch.load(os.path.join(PATH, shard), "
                f"map_location={location!r}, weights_only=True))"
            )
    elif fmt is None or fmt in TORCH_FORMATS:
        load = (f"torch.load({'f' if url else 'PATH'}, map_location={location!r}, "
                "weights_only=True)")
        first = len(read)
        if plan.allowed_globals:
            lines, refs = _global_imports(plan.allowed_globals)
            imports += lines
            read.append(
                "# weights_only=True calls only allowlisted names: these are plain data "
                "constructors, matched by the exact name in the file."
            )
            read.append(f"with torch.serialization.safe_globals([{', '.join(refs)}]):")
            read.append(f"    ckpt = {load}")
        else:
            read.append(f"ckpt = {load}  # weights_only=True never runs code from the file")
        if url is not None:  # torch.load reads the file object fsspec opens
            read[first:] = [f'with fsspec.open(PATH, "rb"{opened}) as f:',
                            *("    " + line for line in read[first:])]
        if entry:
            read.append(f"sd = {entry_expr('ckpt', entry)}")
        else:
            read.append("sd = ckpt")
        read.append(
            "sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}"
            "  # tensors only"
        )
    else:
        imports.append(
            f"import ckwidget  # plain torch cannot read this {fmt} checkpoint safely"
        )
        read.append(
            f"sd = ckwidget.open_checkpoint(PATH{', storage_options' if opened else ''})"
            f".state_dict({entry!r}, map_location={location!r})"
        )

    body: list[str] = []
    for fix in plan.fixes:
        if fix.load_time:
            continue
        lines = fix.code(ctx)
        if lines:
            body.append(f"# {fix.describe()}")
            body += lines

    strict = plan.strict
    assign = plan.assign or bool(model is not None and meta_model(model))
    call = f"{model_name}.load_state_dict(sd, strict={strict}"
    call += ", assign=True)" if assign else ")"
    load = [f"result = {call}"]
    if assign:
        load.insert(0, "# The model is on the meta device: take the tensors instead of copying.")
    load += [
        'print(f"loaded {len(sd) - len(result.unexpected_keys)} tensors")',
        "if result.missing_keys:",
        '    print("kept their initial values:", result.missing_keys)',
        "if result.unexpected_keys:",
        '    print("not used:", result.unexpected_keys)',
    ]

    out = [*imports, "", f"PATH = {path_literal}", "", *read]
    if body:
        out += ["", *body]
    out += ["", *load]
    return "\n".join(out) + "\n"


def _one_line(text: str) -> str:
    """Text safe inside a ``#`` comment: one line, printable."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:200]
