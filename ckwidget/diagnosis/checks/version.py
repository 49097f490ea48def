"""Safety and version: the reader's facts, and what they mean for the installed torch."""

from __future__ import annotations

from ...checkpoint import Finding
from ...fixes.kinds import AllowGlobals, ExtractWeights
from ..context import Context

VERSION_KEYS = ("torch_version", "pytorch-lightning_version", "lightning_version",
                "transformers_version", "timm_version", "deepspeed_version")


def installed_torch() -> tuple[str, tuple[int, int]]:
    import torch

    text = torch.__version__.split("+")[0]
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:2]]
    return text, (parts[0], parts[1] if len(parts) > 1 else 0)


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    ver, major_minor = installed_torch()
    weights_only_default = major_minor >= (2, 6)
    malicious = ctx.file_findings("malicious")
    for f in malicious:
        ctx.blockers.append(f.kind)
        out.append(f)
    for f in ctx.file_findings("unsafe-globals"):
        names = tuple(str(n) for n in f.details.get("globals", ()))
        consequence = (
            f" With torch {ver}, torch.load(path) uses weights_only=True by default and "
            "raises 'Unsupported global' on this file."
            if weights_only_default else
            f" torch {ver} still unpickles everything by default; pass weights_only=True "
            "and allowlist these names instead of trusting the whole file.")
        fixes = []
        if not malicious and names:
            try:
                fixes = [AllowGlobals(names)]
            except Exception:  # a name torch could never allowlist
                fixes = []
        ctx.blockers.append(f.kind)
        out.append(_extend(f, consequence, fixes))
    for f in ctx.file_findings("missing-class"):
        ctx.blockers.append(f.kind)
        fixes = [] if malicious else [ExtractWeights()]
        out.append(_extend(
            f, " Define or import the class before loading, or extract the weights as a "
            "state dict (the plan does this).", fixes))
    recorded = {k: ctx.ckpt.metadata[k] for k in VERSION_KEYS
                if isinstance(ctx.ckpt.metadata.get(k), (str, int, float))}
    saved = "".join(f", {k.replace('_version', '')} {v}" for k, v in recorded.items())
    for f in ctx.file_findings("version"):
        text = f" Installed here: torch {ver}{saved}." if not saved else (
            f" The file records {saved[2:]}; installed here: torch {ver}.")
        out.append(_extend(f, text, []))
    if recorded and not ctx.file_findings("version"):
        facts = ", ".join(f"{k} {v}" for k, v in recorded.items())
        out.append(Finding(
            "version", "info",
            f"The file records {facts}; installed here: torch {ver}.",
            details={"recorded": recorded, "installed_torch": ver}))
    return out


def _extend(f: Finding, text: str, fixes: list) -> Finding:
    message = f.message if text.strip() in f.message else f.message + text
    return Finding(f.kind, f.severity, message, list(f.keys), list(f.fixes) + fixes,
                   dict(f.details))
