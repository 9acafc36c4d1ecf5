"""INT8 against FP32 on the same engine, same run; and the wall time of a whole int8 package step.

    python benchmarks/bench_int8.py [--threads 2] [--rounds 5]

Anchor: the engine's FP32 artifact of EfficientNet-Lite0; ours: its INT8 artifact with every layer int8
and with the int8 profiles' float_layers (stem + depthwise convolutions in float), all from
`edgesdk convert` and run through edgesdk's sessions on one preprocessed photo.
Ratio = int8 / fp32 latency (goal <= 0.67, i.e. >= 1.5x faster). ncnn joins when its backend lists int8.
Then `edgesdk.package(..., target="x86-openvino-int8")` with 100 calibration images, timed end to end
(goal <= 60 s): the 107 project photos plus 18 of them mirrored make 125 images, of which the
split calibrates on 100 and holds 25 back for the accuracy budget.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import HEADER, compare, row  # noqa: E402
from tools import models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import cv2

    from edgesdk.backends import registry
    from edgesdk.backends.base import ConvertOptions, TensorInfo
    from edgesdk.build.calibration import calibration_feeds
    from edgesdk.build.optimize import optimize
    from edgesdk.build.package import package
    from edgesdk.device.preprocess import PreprocessSpec
    from edgesdk.build.model import load_model
    from edgesdk.build.quantize import resolve_float_layers

    spec = PreprocessSpec(**models.EFFICIENTNET_PREPROCESS)
    photos = list(models.images().values())
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as work:
        work = Path(work)
        opt = optimize(models.efficientnet_lite0(), work / "opt.onnx").path
        calib = calibration_feeds(models.calibration_images(), [TensorInfo("images", (1, 3, 224, 224), "float32")],
                                  spec)
        feed = calib[0]
        # the x86-openvino-int8 and rk3588-cpu profiles' [quantize] float_layers
        float_layers = resolve_float_layers(load_model(opt), ["stem", "depthwise"], opt)
        engines = ["openvino"] + (["ncnn"] if "int8" in registry.get("ncnn").precisions else [])
        print(HEADER)
        for name in engines:
            be = registry.get(name)
            fp32 = be.convert(opt, work / f"{name}-fp32", ConvertOptions())
            for label, exclude in (("every layer", []), ("stem+dw float", float_layers)):
                int8 = be.convert(opt, work / f"{name}-int8", ConvertOptions(precision="int8", calibration=calib,
                                                                             exclude=exclude))
                with be.open(fp32, threads=args.threads) as a, be.open(int8, threads=args.threads) as b:
                    a_ms, b_ms = compare(lambda: a.run(feed), lambda: b.run(feed), rounds=args.rounds)
                print(row(f"{name} int8 {label} vs fp32 ({args.threads} thr)", a_ms, b_ms, "<= 0.67"))

        folder = work / "calib"
        folder.mkdir()
        for k, p in enumerate(photos):
            cv2.imwrite(str(folder / f"{k:03d}.png"), cv2.imread(str(p)))
        for k, p in enumerate(photos[:125 - len(photos)]):
            cv2.imwrite(str(folder / f"m{k:03d}.png"), cv2.flip(cv2.imread(str(p)), 1))
        t = time.perf_counter()
        result = package(models.efficientnet_lite0(), "x86-openvino-int8", work / "bundle", calib=folder,
                         threads=args.threads)
        wall = time.perf_counter() - t
        q = result.manifest["quantization"]
        print(f"\npackage x86-openvino-int8, {q['calibration_images']} calibration + {q['held_back_images']} held-back "
              f"images: {wall:.1f} s (goal <= 60 s); stages {json.dumps(result.manifest['build_seconds'])}")
        print(f"budget steps: {[(len(s['float_nodes']), s['check']['top1_drop'], round(s['check']['cosine_min'], 4)) for s in q['steps']]}"
              f"; kept in float: {q['fallback']}; latency {q['latency_ms']}")


if __name__ == "__main__":
    main()
