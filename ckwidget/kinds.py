"""The vocabulary every layer shares: finding kinds, the sets derived from them, and the
status words. Nothing here imports anything of ckwidget's, so readers, diagnosis, fixes,
the CLI and the widget can all import it (and the reference-doc test checks it).

To add a finding kind: one line in ``FINDING_KINDS`` below (its group and its meaning in
one sentence), then the check module that emits it (``diagnosis/checks/``), then its row
in docs/reference.md. The derived sets name their members explicitly: a new kind joins
one only by being written there.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["error", "warning", "info"]
Status = Literal["ok", "fixable", "partial", "broken", "unsafe"]
RowStatus = Literal["match", "missing", "unexpected", "shape-mismatch", "dtype-differs",
                    "transposed", "renamed"]

# kind -> (group, what it means)
FINDING_KINDS: dict[str, tuple[str, str]] = {
    "not-a-checkpoint": ("file", "the file holds no weights (another kind of file)"),
    "lfs-pointer": ("file", "a Git LFS pointer in place of the weights"),
    "html-page": ("file", "an HTML page (a login or error page) saved as the weights"),
    "truncated": ("file", "the file ends early: a cut-off download or copy"),
    "corrupt": ("file", "damaged bytes or records: CRC, directory, pickle or views"),
    "foreign-format": ("file", "weights of another framework or archive format"),
    "sharded": ("file", "one shard of several, or a folder of shards"),
    "torchscript": ("file", "a TorchScript archive rather than a torch.save checkpoint"),
    "malicious": ("safety", "names a callable that runs code or touches the system"),
    "unsafe-globals": ("safety", "names globals torch.load(weights_only=True) refuses"),
    "missing-class": ("safety", "needs classes that cannot be imported here"),
    "version": ("safety", "a format or version that the installed torch reads differently"),
    "device": ("hardware", "tensors saved on a device this machine lacks"),
    "meta-model": ("hardware", "the model is on the meta device: loading needs assign=True"),
    "nested": ("architecture", "the weights sit inside a container of the file"),
    "prefix": ("architecture", "keys carry (or lack) a wrapper prefix"),
    "renamed": ("architecture", "weights saved under other names"),
    "missing-keys": ("architecture", "model tensors the checkpoint lacks"),
    "unexpected-keys": ("architecture", "checkpoint tensors the model lacks"),
    "shape-mismatch": ("architecture", "the same key with another shape"),
    "transposed": ("architecture", "weights stored transposed"),
    "dtype": ("architecture", "the same key with another dtype"),
    "tied-weights": ("architecture", "weights the model ties (shares) saved once or twice"),
    "optimizer": ("architecture", "optimizer state beside (or instead of) the weights"),
    "nonfinite": ("data", "weights hold NaN or Inf values"),
    "preprocessing": ("data", "inputs unlike the statistics the model was trained on"),
}

# Findings about the file's bytes themselves: damaged or not weights (the corruption
# check carries them into the report).
DAMAGED_FILE_KINDS = frozenset({
    "not-a-checkpoint", "lfs-pointer", "html-page", "truncated", "corrupt"})
# Files with no usable weights at all (the CLI's "broken file" exit code).
NO_WEIGHTS_KINDS = frozenset({
    "not-a-checkpoint", "lfs-pointer", "html-page", "truncated", "foreign-format"})
# File findings no fix repairs: the bytes are not weights any plan could load (as errors).
UNREPAIRABLE_KINDS = frozenset(NO_WEIGHTS_KINDS | {"corrupt", "malicious"})
# What torch's weights-only loader refuses about the names a pickle uses.
GLOBALS_KINDS = frozenset({"malicious", "unsafe-globals", "missing-class"})

assert DAMAGED_FILE_KINDS | NO_WEIGHTS_KINDS | UNREPAIRABLE_KINDS | GLOBALS_KINDS <= set(
    FINDING_KINDS)
