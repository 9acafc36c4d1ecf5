"""`edgesdk` command line: thin wrappers over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, never a traceback), 3 a parity check that
failed (the report says by how much), 1 an internal failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import EdgeSDKError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise EdgeSDKError(f"{self.prog}: {message} (see --help)")


def _shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    from .model import parse_shape

    return dict(parse_shape(v) for v in values or [])


def _floats(text: str | None, flag: str, default: float) -> tuple[float, ...]:
    if not text:
        return (default,) * 3
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) not in (1, 3):
        raise EdgeSDKError(f"bad {flag} {text!r}: expected one number or three comma-separated, e.g. 127.5,127.5,127.5")
    return vals * 3 if len(vals) == 1 else vals


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


def cmd_convert(args) -> int:
    from .package import convert, stderr_progress

    spec = None
    if args.mean or args.std or args.color:
        from .preprocess import PreprocessSpec

        # Size and layout follow each image input; only the normalisation is the user's to give here.
        spec = PreprocessSpec(mean=_floats(args.mean, "--mean", 0.0), std=_floats(args.std, "--std", 1.0),
                              color=args.color or "rgb", size=(1, 1))
    result = convert(args.model, args.backend, args.out, precision=args.precision, shapes=_shapes(args.shape),
                     images=args.images, spec=spec, samples=args.samples, gate=not args.no_gate,
                     progress=None if args.json else stderr_progress)
    human = (f"wrote {result.artifact.root} ({args.backend} {args.precision}: "
             f"{', '.join(result.artifact.files)})\n{result.parity.summary()}")
    _emit(args, result.to_dict(), human)
    return 0 if result.parity.passed else 3


def cmd_validate(args) -> int:
    from .package import validate_artifact

    report = validate_artifact(args.path, images=args.images, samples=args.samples)
    _emit(args, report.to_dict(), report.summary())
    return 0 if report.passed else 3


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

    s = sub.add_parser("convert", help="convert for one backend and check parity against onnxruntime")
    s.add_argument("model")
    s.add_argument("--backend", required=True, help="ncnn | openvino | onnxruntime | tensorrt | triton")
    s.add_argument("--out", required=True, help="output directory (replaced atomically)")
    s.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    s.add_argument("--shape", action="append", metavar="NAME=1x3x320x320", help="fix a dynamic input")
    s.add_argument("--images", "--calib", dest="images", metavar="DIR", help="real images for the parity check")
    s.add_argument("--samples", type=int, default=8, help="inputs compared against onnxruntime")
    s.add_argument("--mean", help="per-channel mean of the model's normalisation (default ImageNet), e.g. 127,127,127")
    s.add_argument("--std", help="per-channel std, e.g. 128,128,128")
    s.add_argument("--color", choices=["rgb", "bgr"], help="channel order the model wants (default rgb)")
    s.add_argument("--no-gate", action="store_true", help="keep the artifact even when parity fails (exit 3)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("validate", help="re-check a converted directory against its reference ONNX")
    s.add_argument("path")
    s.add_argument("--images", metavar="DIR")
    s.add_argument("--samples", type=int, default=8)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_validate)

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
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("edgesdk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
