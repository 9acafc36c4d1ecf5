"""`edgesdk` command line: thin wrappers over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, never a traceback), 1 an internal failure.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import EdgeSDKError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise EdgeSDKError(f"{self.prog}: {message} (see --help)")


def _shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    from .model import parse_shape

    return dict(parse_shape(v) for v in values or [])


def _emit(args, data: dict, human: str) -> None:
    print(json.dumps(data, indent=2) if args.json else human)


def cmd_inspect(args) -> int:
    from .model import format_report, inspect

    report = inspect(args.model, shapes=_shapes(args.shape), probe=not args.no_probe)
    _emit(args, report.to_dict(), format_report(report))
    return 0


def cmd_check(args) -> int:
    from .model import check

    result = check(args.model)
    _emit(args, result, f"{args.model}: valid ONNX model")
    return 0


def cmd_targets(args) -> int:
    from .targets import list_targets, load_target

    profiles = [load_target(n) for n in list_targets()]
    rows = [{"name": t.name, "engine": t.engine, "precision": t.precision, "arch": t.arch,
             "threads": t.threads, "description": t.description} for t in profiles]
    human = "\n".join([f"{'name':<24}{'engine':<13}{'precision':<11}{'arch':<9}description"]
                      + [f"{r['name']:<24}{r['engine']:<13}{r['precision']:<11}{r['arch']:<9}{r['description']}"
                         for r in rows])
    _emit(args, {"targets": rows}, human)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="edgesdk", description="Package ONNX models for edge boards and run them.")
    p.add_argument("--version", action="version", version=f"edgesdk {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("inspect", help="ops, I/O, params, FLOPs and per-backend compatibility of an ONNX model")
    s.add_argument("model")
    s.add_argument("--shape", action="append", metavar="NAME=1x3x224x224", help="fix a dynamic input for FLOPs")
    s.add_argument("--no-probe", action="store_true", help="use the support tables only; do not try the engines")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("check", help="ONNX checker + strict shape inference")
    s.add_argument("model")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("targets", help="the built-in target profiles")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_targets)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except EdgeSDKError as e:
        print(f"edgesdk: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgesdk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
