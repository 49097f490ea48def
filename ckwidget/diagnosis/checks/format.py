"""Format: foreign, sharded and TorchScript files, and which loader reads them."""

from __future__ import annotations

from ...checkpoint import Finding
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
        out.append(Finding(f.kind, f.severity, message, list(f.keys), list(f.fixes),
                           dict(f.details)))
    return out
