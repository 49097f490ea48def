"""The ``ckwidget`` argument parser: the three commands, their options and their help."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import NoReturn

from .. import __version__
from .check import cmd_check
from .exit_codes import EXIT_CODES_HELP, USAGE
from .fix import cmd_fix
from .inspect import cmd_inspect

MAIN_EPILOG = f"""\
examples:
  ckwidget inspect model.pt                    what is in the file (no torch needed)
  ckwidget inspect model.safetensors --json    the same, for scripts
  ckwidget check ckpt.pt --model models.py:build
  ckwidget check ckpt.pt --model mypkg.nets:ResNet --entry state_dict --strict
  ckwidget fix ckpt.pt --model models.py:build -o repaired.safetensors --code
  ckwidget inspect s3://bucket/run/model.pt -v  a remote file, read by ranges

Opening a file never runs code from it: pickles are read symbolically.
Run `ckwidget COMMAND --help` for the options of each command.

{EXIT_CODES_HELP}"""

MODEL_HELP = (
    "MODULE:FACTORY building the model: a module path (mypkg.models:build) or a Python "
    "file (models.py:Net); FACTORY is a function or class called with no arguments. "
    "It is built on the meta device when it allows (FACTORY(device='meta') or under "
    "torch.device('meta')), so a big model costs no memory.")


VERIFY_HELP = ("read every byte of the file once: the CRC-32 of every record of a torch "
               "zip archive (torch never checks them, so damaged weights load without a "
               "word), every byte of safetensors files; a mismatch is a broken file (exit "
               "3)")


PATH_HELP = ("checkpoint file or folder, or its URL (s3://, gs://, az://, https://, hf://, "
             "any fsspec protocol; a folder URL over HTTP ends with '/'): read by ranges, "
             "never downloaded whole (pip install ckwidget[remote])")
STORAGE_HELP = ("an fsspec storage option for a URL (repeatable), e.g. "
                "--storage-option endpoint_url=http://localhost:9000 --storage-option "
                "anon=true; VALUE is read as JSON when it can be")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes exit with USAGE and no Python noise."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"ckwidget: {message} (see --help)\n")


def _para(text: str) -> str:
    return textwrap.fill(text, 78)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="ckwidget", formatter_class=fmt,
        description=_para("Why won't this checkpoint load? Inspect a checkpoint, check it against "
                    "your model, and write a repaired copy, never running code from the file."),
        epilog=MAIN_EPILOG)
    parser.add_argument("--version", action="version", version=f"ckwidget {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "inspect", formatter_class=fmt, help="what a checkpoint holds (no model needed)",
        description=_para("Format, size, versions, tensors (repeated layers collapsed), the "
                    "entries that look like a state dict, and findings about the file. "
                    "Reads no tensor bytes and does not import torch."),
        epilog="examples:\n  ckwidget inspect model.pt\n  ckwidget inspect model.pt --all\n"
               "  ckwidget inspect shards/ --json | jq .findings\n\n" + EXIT_CODES_HELP)
    p.add_argument("path", help=PATH_HELP)
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help=STORAGE_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON document instead")
    p.add_argument("--all", action="store_true",
                   help="list every tensor and metadata entry (no grouping, no row limit)")
    p.add_argument("--verify", action="store_true", help=VERIFY_HELP)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show info findings too (by default they are counted), and for a "
                        "URL the requests and bytes read")
    p.set_defaults(run=cmd_inspect)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", help=PATH_HELP)
        p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                       help=STORAGE_HELP)
        p.add_argument("--model", "-m", required=True, metavar="MODULE:FACTORY",
                       help=MODEL_HELP)
        p.add_argument("--entry", metavar="KEY", default=None,
                       help="the container holding the weights ('state_dict', 'model', "
                            "'ema'...; '' is the top level); chosen automatically by default")
        p.add_argument("--map-location", metavar="DEVICE", default=None,
                       help="device the tensors should load on (e.g. cpu)")
        p.add_argument("--strict", action="store_true",
                       help="fail (exit 2) when the plan would leave any checkpoint value "
                            "out (dropped keys, resized tensors)")
        p.add_argument("--no-meta", action="store_true",
                       help="build the model normally instead of on the meta device")
        p.add_argument("--code", action="store_true",
                       help="print the plan as plain torch code")
        p.add_argument("--all", action="store_true", help="list every key that needs attention")
        p.add_argument("--verify", action="store_true",
                       help=VERIFY_HELP + "; files up to 512 MiB are verified without it")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="show info findings too (by default they are counted), and for "
                            "a URL the requests and bytes read")

    p = sub.add_parser(
        "check", formatter_class=fmt, help="will it load into my model? (exit code says)",
        description=_para("Diagnose the checkpoint against the model FACTORY builds: the headline, "
                    "the findings, the keys that need attention and the suggested plan."),
        epilog="examples:\n  ckwidget check ckpt.pt --model models.py:build\n"
               "  ckwidget check ckpt.pt -m mypkg.nets:resnet18 --entry state_dict --code\n"
               "  ckwidget check ckpt.pt -m models.py:build --strict || echo 'do not publish'\n\n"
               + EXIT_CODES_HELP)
    model_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON document instead")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser(
        "fix", formatter_class=fmt, help="write a repaired checkpoint for my model",
        description=_para("Apply the suggested plan and write the repaired state dict (keys as the "
                    "model names them) to a new file, atomically; the source is never written."),
        epilog="examples:\n  ckwidget fix ckpt.pt --model models.py:build -o fixed.safetensors\n"
               "  ckwidget fix ckpt.pt -m mypkg.nets:build -o fixed.pt --format torch --code\n\n"
               + EXIT_CODES_HELP)
    model_options(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="where to write the repaired checkpoint (a new file)")
    p.add_argument("--format", choices=("safetensors", "torch"), default=None,
                   help="file format to write (default: by the suffix of -o: .pt, .pth, "
                        ".bin, .ckpt are torch, anything else safetensors)")
    p.add_argument("--allow-partial", action="store_true",
                   help="write even when the verdict is exit 2 (some model tensors would "
                        "keep their initial values, or values are not finite)")
    p.set_defaults(run=cmd_fix)
    return parser
