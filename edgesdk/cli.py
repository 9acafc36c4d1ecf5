"""`edgesdk` command line: thin wrappers over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, never a traceback), 3 a parity check that
failed (the report says by how much), 1 an internal failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from edgesdk.errors import EdgeSDKError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise EdgeSDKError(f"{self.prog}: {message} (see --help)")


def _shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    from edgesdk.build.model import parse_shape

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
    from edgesdk.build.inspect import format_report, inspect

    report = inspect(args.model, shapes=_shapes(args.shape), probe=not args.no_probe)
    _emit(args, report.to_dict(), format_report(report))
    return 0


def cmd_check(args) -> int:
    from edgesdk.build.inspect import check

    result = check(args.model)
    _emit(args, result, f"{args.model}: valid ONNX model")
    return 0


def cmd_targets(args) -> int:
    from edgesdk.build.targets import list_targets, load_target

    profiles = [load_target(n) for n in list_targets()]
    rows = [{"name": t.name, "engine": t.engine, "precision": t.precision, "arch": t.arch,
             "threads": t.threads, "description": t.description} for t in profiles]
    human = "\n".join([f"{'name':<24}{'engine':<13}{'precision':<11}{'arch':<9}description"]
                      + [f"{r['name']:<24}{r['engine']:<13}{r['precision']:<11}{r['arch']:<9}{r['description']}"
                         for r in rows])
    _emit(args, {"targets": rows}, human)
    return 0


def cmd_convert(args) -> int:
    from edgesdk.build.package import convert, stderr_progress

    spec = _spec_override(args)
    result = convert(args.model, args.backend, args.out, precision=args.precision, shapes=_shapes(args.shape),
                     images=args.images, spec=spec, samples=args.samples, gate=not args.no_gate,
                     require_engine=False,  # the engine runs an artifact; writing one needs only the converter
                     progress=None if args.json else stderr_progress)
    human = (f"wrote {result.artifact.root} ({args.backend} {args.precision}: "
             f"{', '.join(result.artifact.files)})\n"
             + (result.parity.summary() if result.parity else f"parity: {result.skipped}"))
    _emit(args, result.to_dict(), human)
    return 0 if result.parity is None or result.parity.passed else 3


def _spec_override(args):
    if not (args.mean or args.std or args.color):
        return None
    from edgesdk.device.preprocess import PreprocessSpec

    # Size and layout follow the model's image input; only the normalisation is the user's to give here.
    return PreprocessSpec(mean=_floats(args.mean, "--mean", 0.0), std=_floats(args.std, "--std", 1.0),
                          color=args.color or "rgb", size=(1, 1))


def cmd_package(args) -> int:
    from edgesdk.build.package import package, stderr_progress

    labels = None
    if args.labels:
        from pathlib import Path

        p = Path(args.labels)
        if not p.is_file():
            raise EdgeSDKError(f"{p}: no such labels file")
        labels = p.read_text().splitlines()
    result = package(args.model, args.target, args.out, calib=args.calib, shapes=_shapes(args.shape),
                     spec=_spec_override(args), labels=labels, tar=args.tar, sign=args.sign,
                     progress=None if args.json else stderr_progress)
    v = result.manifest["validation"]
    b, skipped = result.manifest["benchmark"], result.manifest.get("benchmark_skipped")
    q = result.manifest.get("quantization") or {}
    held = bool(q.get("steps")) and q["steps"][-1]["check"]["passed"]
    verdict = ("passed" if v.get("passed") else "not run here" if v.get("passed") is None
               else "outside the fp32 tolerance, informational: the int8 budget held" if held else "FAILED")
    if v.get("outputs"):
        figures = [f"cosine min {v['cosine_min']:.6f}", f"max abs {v['max_abs']:.3g}"]
        if v.get("top1_agreement") is not None:
            figures.append(f"top-1 {v['top1_agreement']:.3f}")
        verdict += f" ({', '.join(figures)})"
    human = [f"bundle {result.out}" + (f" (+ {result.tar})" if result.tar else ""),
             f"  {result.manifest['backend']} {result.manifest['precision']} for {result.manifest['target']['name']}",
             "  parity: " + verdict]
    if q.get("steps"):
        last = q["steps"][-1]
        c = last["check"]
        on = (f"top-1 kept on {c['decided'] - c['flips']} of {c['decided']} photos fp32 decides, "
              if c.get("decided") is not None else "")
        human.append(f"  int8 budget: {'held' if held else 'missed'} ({on}cosine min {c['cosine_min']:.4f} over "
                     f"{c['samples']} images{', 2-fold cross-check' if c.get('folds', 1) > 1 else ''}), "
                     f"{len(last['float_nodes'])} layer(s) in float")
    human.append("  latency here: " + (f"p50 {b['p50_ms']:.2f} ms, {b['throughput_fps']:.1f} fps" if b else skipped or "-"))
    human.append(f"  report: {result.out / 'report.html'}")
    _emit(args, result.to_dict(), "\n".join(human))
    return 0


def _describe(result: dict) -> str:
    if "topk" in result:
        return ", ".join(f"{(t['label'] or str(t['index'])).split(',')[0]} {t['score']:.2f}" for t in result["topk"][:3])
    if "text" in result and isinstance(result["text"], list):
        return " | ".join(result["text"])
    if "lines" in result:
        return "\n    " + result["text"].replace("\n", "\n    ")
    if "detections" in result:
        dets = result["detections"]
        return f"{len(dets)} detections" + "".join(
            f"\n    {d['label'] or d['class']} {d['score']:.2f} [{', '.join(f'{v:.0f}' for v in d['box'])}]"
            for d in dets[:20])
    if "boxes" in result:
        return f"{len(result['boxes'])} text boxes"
    return ", ".join(f"{k} {list(getattr(v, 'shape', []))}" for k, v in result.items())


def _jsonable(result: dict) -> dict:
    import numpy as np

    return {k: (v.tolist() if isinstance(v, np.ndarray) and v.size <= 4096 else
                {"shape": list(v.shape), "dtype": str(v.dtype)} if isinstance(v, np.ndarray) else v)
            for k, v in result.items()}


def cmd_run(args) -> int:
    import time

    from edgesdk.device.preprocess import read_image
    from edgesdk.device.runtime import load

    model = load(args.bundle, threads=args.threads, trusted_keys=args.trusted_key)
    rec = load(args.rec, threads=args.threads, trusted_keys=args.trusted_key) if args.rec else None
    rows = []
    for path in args.images:
        frame = read_image(path)
        t = time.perf_counter()
        if rec is not None:
            from edgesdk.device.ocr import ocr_page

            if not rec.labels:
                raise EdgeSDKError(f"{args.rec}: the recognition bundle has no labels (its character list)")
            det_params = {k: v for k, v in (model.manifest["postprocess"] or {}).items() if k != "kind"}
            result = ocr_page(model.infer, rec.infer, frame, keys=rec.labels, det_params=det_params or None,
                              det_input=model.inputs[0].name, rec_input=rec.inputs[0].name,
                              rec_shape=list(rec.inputs[0].shape))
        else:
            result = model(frame)
        ms = (time.perf_counter() - t) * 1e3
        rows.append({"image": str(path), "ms": ms, **_jsonable(result)})
        if not args.json:
            print(f"{path}: {_describe(result)}  ({ms:.1f} ms)")
    if args.json:
        print(json.dumps({"results": rows}, indent=2))
    return 0


def cmd_keygen(args) -> int:
    from pathlib import Path

    from edgesdk.device.bundle import generate_key

    if Path(args.key).exists():
        raise EdgeSDKError(f"{args.key}: exists; refusing to overwrite a key")
    priv, pub = generate_key(args.key)
    print(f"private key {priv} (keep it secret; edgesdk package --sign {priv})\npublic key  {pub} "
          f"(ship it to devices; edgesdk.load(..., trusted_keys=['{pub.name}']))")
    return 0


def cmd_bench(args) -> int:
    from edgesdk.device.bench import benchmark
    from edgesdk.device.runtime import load

    model = load(args.bundle, threads=args.threads)
    frames = []
    if model.spec is not None:
        import numpy as np

        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(4)]
    r = benchmark(model, frames, seconds=args.seconds, streams=args.streams)
    r.pop("latencies_ms")
    human = (f"{model.backend} {model.precision}, {r['threads'] or 'default'} threads, {r['streams']} streams, "
             f"{r['iterations']} runs on {r['cpu']}\n"
             f"p50 {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
             f"{r['throughput_fps']:.1f} fps\npre {r['pre_ms']:.2f} ms  infer {r['infer_ms']:.2f} ms  "
             f"post {r['post_ms']:.2f} ms")
    _emit(args, r, human)
    return 0


def cmd_demo(args) -> int:
    import time

    from edgesdk.build.package import package, stderr_progress
    from edgesdk.device.preprocess import read_image
    from edgesdk.device.runtime import load

    model, images = _demo_inputs(args)
    result = package(model, args.target, args.out, calib=images, progress=stderr_progress)
    print(f"packaged {model.name} for {args.target} -> {result.out}")
    with load(result.out) as m:
        report = m.check()
        print(f"self-check on this machine: {'passed' if report.passed else 'FAILED'} "
              f"(cosine min {report.cosine_min:.6f})")
        for path in images[: args.count]:
            frame = read_image(path)
            t = time.perf_counter()
            out = m(frame)
            ms = (time.perf_counter() - t) * 1e3
            print(f"  {path.name:<40} {_describe(out):<60} {ms:6.1f} ms")
    return 0


def _demo_inputs(args):
    """The demo's model and photos: given on the command line, or the project's real test model."""
    from pathlib import Path

    if args.model:
        from edgesdk.build.calibration import image_files

        if not args.images:
            raise EdgeSDKError("--model needs --images DIR too")
        return Path(args.model), image_files(args.images)
    root = Path(__file__).resolve().parent.parent
    if not (root / "tools" / "models.py").is_file():
        raise EdgeSDKError("edgesdk demo without --model runs from a source checkout (it builds the test model "
                           "with tools/models.py); give --model MODEL.onnx --images DIR instead")
    sys.path.insert(0, str(root))
    from tools import models

    photos = models.images()
    # everyday objects first, so the labels can be checked by eye
    picks = [photos[k] for k in ("skimage_coffee", "skimage_chelsea", "skimage_rocket", "skimage_astronaut",
                                 "opencv_data_squirrel_cls", "opencv_data_orange", "sklearn_china",
                                 "matplotlib_grace_hopper", "skimage_motorcycle_left") if k in photos]
    return models.efficientnet_lite0(), picks + [p for p in models.eval_images() if p not in picks]


def cmd_tune(args) -> int:
    from edgesdk.build.package import stderr_progress
    from edgesdk.build.tune import run_tune

    _emit(args, *run_tune(args, _shapes(args.shape), None if args.json else stderr_progress))
    return 0


def cmd_serve(args) -> int:
    from edgesdk.backends.triton.serve import serve

    return serve(args.repo, http_port=args.http_port, grpc_port=args.grpc_port, server=args.server, host=args.host)


def cmd_validate(args) -> int:
    from edgesdk.build.parity import validate_artifact

    report = validate_artifact(args.path, images=args.images, samples=args.samples)
    _emit(args, report.to_dict(), report.summary())
    return 0 if report.passed else 3


def cmd_doctor(args) -> int:
    from edgesdk.device.doctor import format_report, run

    report = run()
    _emit(args, report, format_report(report))
    return 0 if report["ok"] else 3


def _normalisation_args(s) -> None:
    """--mean/--std/--color, read by _spec_override: the model's normalisation when it does not carry it."""
    s.add_argument("--mean", help="per-channel mean of the model's normalisation, e.g. 127,127,127 "
                                  "(default: the profile's, the model's metadata, else ImageNet)")
    s.add_argument("--std", help="per-channel std, e.g. 128,128,128")
    s.add_argument("--color", choices=["rgb", "bgr"], help="channel order the model wants (default rgb)")


def build_parser() -> argparse.ArgumentParser:
    from edgesdk._version import __version__

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
    _normalisation_args(s)
    s.add_argument("--no-gate", action="store_true", help="keep the artifact even when parity fails (exit 3)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("package", help="convert for a target profile and write a verified bundle")
    s.add_argument("model")
    s.add_argument("--target", required=True, help="a built-in profile name (edgesdk targets) or a .toml file")
    s.add_argument("--out", required=True, help="bundle directory (written atomically)")
    s.add_argument("--calib", metavar="DIR|IMAGE|GLOB",
                   help="real images (a folder, one image or a quoted glob): calibration, parity and golden samples")
    s.add_argument("--shape", action="append", metavar="NAME=1x3x320x320", help="fix a dynamic input")
    _normalisation_args(s)
    s.add_argument("--labels", metavar="FILE", help="class names, one per line")
    s.add_argument("--tar", action="store_true", help="also write BUNDLE.tar.gz")
    s.add_argument("--sign", metavar="KEY", help="sign the bundle with an ed25519 private key (edgesdk keygen)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_package)

    s = sub.add_parser("run", help="run a bundle on image files")
    s.add_argument("bundle")
    s.add_argument("images", nargs="+")
    s.add_argument("--rec", metavar="BUNDLE", help="PP-OCR: the recognition bundle to read the detected boxes")
    s.add_argument("--trusted-key", action="append", metavar="PUB", help="refuse bundles not signed by this key")
    s.add_argument("--threads", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("keygen", help="make an ed25519 key pair for signing bundles")
    s.add_argument("key", help="private key file to write (KEY.pub gets the public key)")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("bench", help="latency percentiles, throughput and the pre/infer/post split of a bundle")
    s.add_argument("bundle")
    s.add_argument("--threads", type=int)
    s.add_argument("--streams", type=int, default=1)
    s.add_argument("--seconds", type=float, default=5.0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="package EfficientNet-Lite0 for this machine and classify real photos")
    s.add_argument("--target", default="host")
    s.add_argument("--out", default="out/demo-bundle")
    s.add_argument("--model", help="another ONNX classifier instead of the built-in one")
    s.add_argument("--images", metavar="DIR")
    s.add_argument("--count", type=int, default=8, help="photos to classify")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("validate", help="re-check a converted directory against its reference ONNX, "
                                        "or a bundle against its golden samples")
    s.add_argument("path")
    s.add_argument("--images", metavar="DIR")
    s.add_argument("--samples", type=int, default=8)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("serve", help="serve a Triton model repository (edgesdk package --target triton-cpu) with a "
                                     "real tritonserver until Ctrl-C")
    s.add_argument("repo")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--server", metavar="PATH", help="the tritonserver to run (default: the one tools/triton_env.sh "
                                                    "sets up, else PATH)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("tune", help="the fastest engine, precision and threading here that keep the accuracy")
    s.add_argument("path", metavar="MODEL_OR_BUNDLE")
    for flag in ("--calib", "--out", "--images"):  # --images: --runtime-only's frames (default: 720p noise)
        s.add_argument(flag, metavar="DIR")
    s.add_argument("--target", default="host", help="base profile: preprocessing, gate and int8 budget")
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--objective", choices=("latency", "throughput"), default="latency")
    s.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    s.add_argument("--shape", action="append", metavar="NAME=1x3xHxW")
    s.add_argument("--runtime-only", action="store_true", help="tune a bundle's runtime settings (tuning.json)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("targets", help="the built-in target profiles")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("doctor", help="this board: platform, CPU features, engines, and a tiny model run on each "
                                      "engine against numpy (exit 3 when one fails)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_doctor)
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
