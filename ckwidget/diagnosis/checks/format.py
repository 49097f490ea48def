"""Format: foreign, sharded and TorchScript files, and which loader reads them."""

from __future__ import annotations

from ...checkpoint import Finding
from ...fixes.kinds import ExtractWeights
from ..context import Context

LOADERS = {
    "foreign-format": " Convert it to a PyTorch state dict with the library that wrote it first.",
    "sharded": " Load every shard (transformers' from_pretrained, or safetensors per shard "
               "merged into one dict) and diagnose the folder instead of one shard.",
    "torchscript": " It is a TorchScript archive: load it with torch.jit.load only if you "
                   "trust it, or use ckwidget's state dict of its constants.",
}


def check(ctx: Context) -> list[Finding]:
    out = []
    for f in ctx.file_findings("foreign-format", "sharded", "torchscript"):
        if f.severity == "error":
            ctx.blockers.append(f.kind)
        hint = LOADERS[f.kind]
        message = f.message
        if not any(w in message.lower() for w in ("load", "convert", "use ")):
            message += hint
        fixes = list(f.fixes)
        if f.kind == "torchscript" and not ctx.file_findings("malicious"):
            # torch.load cannot read it as is: its tensors, read without running the
            # archived code
            why = ("it is a TorchScript archive: torch.load refuses it, and "
                   "torch.jit.load would run its code")
            ctx.blockers.append(f.kind)
            ctx.needs_reader = why
            fixes.append(ExtractWeights(why))
        out.append(Finding(f.kind, f.severity, message, list(f.keys), fixes,
                           dict(f.details)))
    return out
