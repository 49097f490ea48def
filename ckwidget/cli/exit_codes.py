"""The exit codes of the ``ckwidget`` command (documented in --help; CI pipelines depend
on them), and the exception that stands for the usage one."""

from __future__ import annotations

OK = 0            # check: status ok. inspect: file readable and safe. fix: file written.
FIXABLE = 1       # check: status fixable: loads only after the suggested plan.
CANNOT_LOAD = 2   # check/fix: status partial or broken (the model's side), or --strict
#                   and the plan leaves values out.
BAD_FILE = 3      # status unsafe, or broken because of the file itself: not a checkpoint,
#                   truncated, corrupt with no tensors, bytes that fail their CRC, LFS
#                   pointer, HTML page, foreign format.
USAGE = 4         # a mistake in the command: bad option, missing path, bad --model, bad -o.
MODEL_FAILED = 5  # the --model module or factory raised, or did not return an nn.Module.
INTERNAL = 70     # a bug in ckwidget (EX_SOFTWARE); the message asks for a report.
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it).

EXIT_CODES_HELP = """\
exit codes:
  (check and fix: from the report's status: ok, fixable, partial, broken, unsafe)
  0  check: status ok: the checkpoint loads into the model as is
     (load_state_dict(strict=True));  inspect: the file is readable and names nothing
     unsafe;  fix: the file was written
  1  check: status fixable: it loads after the suggested plan (a prefix, a nested
     entry, renames...; tensors the file lacks keep their initial values)
  2  check/fix: status partial (after the plan some model tensors keep their initial
     values while learned values go unused, or values are not finite) or broken (the
     plan cannot give the model what it needs), or --strict and the plan leaves
     values out (dropped keys, resized tensors)
  3  the file is unsafe (names code that would run on load) or broken (not a
     checkpoint, truncated, corrupt with no tensors, records that fail their CRC
     (see --verify), Git LFS pointer, HTML page, another framework's format)
  4  usage error: bad option, missing file, bad --model, output path refused
  5  --model failed: importing MODULE or calling FACTORY raised, or it returned
     something that is not a torch.nn.Module
  70 internal error in ckwidget (please report it)
"""


class UsageError(Exception):
    """A mistake in the command line; one sentence, exit code USAGE."""
