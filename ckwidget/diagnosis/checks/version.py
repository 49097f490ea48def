"""Safety and version: the reader's facts, and what they mean for the installed torch."""

from __future__ import annotations

from ...checkpoint import Finding
from ...fixes.kinds import AllowGlobals, ExtractWeights
from ...kinds import UNREPAIRABLE_KINDS
from ...readers.safety import is_vetted
from ..context import Context

VERSION_KEYS = ("torch_version", "pytorch-lightning_version", "lightning_version",
                "transformers_version", "timm_version", "deepspeed_version")


def installed_torch() -> tuple[str, tuple[int, int]]:
    import torch

    text = torch.__version__.split("+")[0]
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:2]]
    return text, (parts[0], parts[1] if len(parts) > 1 else 0)


TORCH_FORMATS = ("torch-zip", "torch-legacy")


def needs_reader(ctx: Context) -> str:
    """Why torch.load(weights_only=True) cannot read the file and no allowlist can fix
    that (so the plan reads it with ckwidget's reader), or "" when it can."""
    meta = ctx.ckpt.metadata
    if meta.get("read_by_ckwidget"):
        return ""
    if ctx.ckpt.format == "dcp" and ctx.ckpt.tensors:  # its note is a foreign-format one
        return ("it is a torch.distributed.checkpoint (DCP) folder, and torch's own DCP "
                "reader unpickles its .metadata with plain pickle")
    if ctx.file_findings(*UNREPAIRABLE_KINDS):
        return ""
    if ctx.ckpt.format == "torchscript":
        return ("it is a TorchScript archive: torch.load refuses it, and torch.jit.load "
                "would run its code")
    if ctx.ckpt.format not in TORCH_FORMATS:
        return ""
    protocol = meta.get("pickle_protocol")
    if isinstance(protocol, int) and protocol >= 4:
        return (f"it uses pickle protocol {protocol}, which torch's weights-only "
                "unpickler cannot read ('Unsupported operand 149')")
    modules = [str(m) for m in meta.get("module_classes") or ()]
    if meta.get("whole_module") or modules:
        what = "the whole model object" if meta.get("whole_module") else "a model object"
        named = f" ({', '.join(modules[:3])})" if modules else ""
        return (f"it holds {what}{named}, not a state dict: unpickling it needs the "
                "class and runs its code")
    if ctx.file_findings("missing-class"):
        return "it needs classes that are not importable here"
    if meta.get("torch_weights_only_accepts") is False and not ctx.file_findings(
            "unsafe-globals"):
        return "torch's weights-only loader refuses it"
    return ""


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    ver, major_minor = installed_torch()
    weights_only_default = major_minor >= (2, 6)
    malicious = ctx.file_findings("malicious")
    for f in malicious:
        ctx.blockers.append(f.kind)
        out.append(f)
    reader = needs_reader(ctx)
    ctx.needs_reader = reader
    extract = [ExtractWeights(reader)] if reader else []
    for f in ctx.file_findings("unsafe-globals"):
        names = tuple(str(n) for n in f.details.get("globals", ()))
        consequence = (
            f" With torch {ver}, torch.load(path) uses weights_only=True by default and "
            "raises 'Unsupported global' on this file."
            if weights_only_default else
            f" torch {ver} still unpickles everything by default; pass weights_only=True "
            "and allowlist these names instead of trusting the whole file.")
        fixes: list = []
        unvetted = [n for n in names if not is_vetted(n)]
        if reader:
            consequence += (f" Allowlisting would not help: {reader}. The plan reads the "
                            "tensors with ckwidget's safe reader instead.")
            fixes = list(extract)
        elif malicious:
            fixes = []
        elif unvetted:
            # never offered for a callable ckwidget has not vetted as pure data: torch's
            # weights-only loader would call it with the file's arguments
            why = (f"it names {', '.join(unvetted[:3])}"
                   + (f" and {len(unvetted) - 3} more" if len(unvetted) > 3 else "")
                   + ", which torch would have to call and ckwidget has not vetted")
            fixes = [ExtractWeights(why)]
            ctx.needs_reader = why
        elif names:
            fixes = [AllowGlobals(names)]
        ctx.blockers.append(f.kind)
        out.append(_extend(f, consequence, fixes))
    for f in ctx.file_findings("missing-class"):
        ctx.blockers.append(f.kind)
        fixes = [] if malicious else list(extract or [ExtractWeights()])
        out.append(_extend(
            f, " Define or import the class before loading, or extract the weights as a "
            "state dict (the plan does this).", fixes))
    recorded = {k: ctx.ckpt.metadata[k] for k in VERSION_KEYS
                if isinstance(ctx.ckpt.metadata.get(k), (str, int, float))}
    saved = "".join(f", {k.replace('_version', '')} {v}" for k, v in recorded.items())
    covered = bool(ctx.file_findings("unsafe-globals", "missing-class"))
    for f in ctx.file_findings("version"):
        text = f" Installed here: torch {ver}{saved}." if not saved else (
            f" The file records {saved[2:]}; installed here: torch {ver}."
        )
        if reader and not covered:
            text += (f" torch.load(weights_only=True) cannot read this file: {reader}. The "
                     "plan reads the tensors with ckwidget's safe reader "
                     "(ckwidget.extract_weights); or save the file again with the default "
                     "protocol to load it with plain torch.")
            out.append(_extend(f, text, extract, severity="warning"))
        else:
            out.append(_extend(f, text, []))
    if reader and not covered and not ctx.file_findings("version"):
        out.append(Finding(
            "version", "warning",
            f"torch.load(weights_only=True) cannot read this file: {reader}. The plan reads "
            "the tensors with ckwidget's safe reader (ckwidget.extract_weights).",
            fixes=list(extract), details={"needs_reader": reader}))
    if recorded and not ctx.file_findings("version"):
        facts = ", ".join(f"{k} {v}" for k, v in recorded.items())
        out.append(Finding(
            "version", "info",
            f"The file records {facts}; installed here: torch {ver}.",
            details={"recorded": recorded, "installed_torch": ver}))
    return out


def _extend(f: Finding, text: str, fixes: list, severity: str | None = None) -> Finding:
    message = f.message if text.strip() in f.message else f.message + text
    return Finding(f.kind, severity or f.severity, message, list(f.keys),  # type: ignore[arg-type]
                   list(f.fixes) + fixes, dict(f.details))
