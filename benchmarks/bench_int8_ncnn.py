"""ncnn int8 (edgesdk's calibration + writer) vs the fp32 ncnn build of the same model, same run.

    python benchmarks/bench_int8_ncnn.py [--threads 1 2] [--rounds 5]

Model: EfficientNet-Lite0 at 224x224. Anchor: the fp32 artifact (`edgesdk convert`, pnnx fp16=0);
ours: int8 artifacts calibrated on 100 real photos (the calibration split plus mirrored copies to
reach 100), in several layouts. Ratio = int8 / fp32 latency (goal <= 0.67, i.e. >= 1.5x faster).
Also prints the whole int8 conversion wall time (goal <= 60 s for 100 images) and, per build, the
top-1 agreement / mean top-5 overlap with onnxruntime fp32 on the eval photos. Other load on the
machine slows both sides alike; the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import HEADER, compare, row  # noqa: E402
from tools import models  # noqa: E402

CALIB_COUNT = 100
GOAL = "<= 0.67"


def calibration_feeds(spec) -> list[dict]:
    from edgesdk.device.preprocess import preprocess_reference

    images = [models.read_bgr(p) for p in models.calibration_images()]
    mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    return [{"images": preprocess_reference(im, spec)} for im in (images + mirrored)[:CALIB_COUNT]]


def float_layers(onnx_path) -> list[str]:
    """ONNX names of the stem conv and the depthwise convs: the int8 profiles' float_layers."""
    from edgesdk.build.model import load_model
    from edgesdk.build.quantize import resolve_float_layers

    return resolve_float_layers(load_model(onnx_path), ["stem", "depthwise"], onnx_path)


def accuracy(session, feeds, refs) -> str:
    gots = [session.run(f)["logits"][0] for f in feeds]
    top1 = np.mean([r.argmax() == g.argmax() for r, g in zip(refs, gots)])
    top5 = np.mean([len(set(np.argsort(-r)[:5]) & set(np.argsort(-g)[:5])) / 5 for r, g in zip(refs, gots)])
    return f"top-1 {top1:.2f}, top-5 overlap {top5:.3f}"


def raw_net(artifact, threads: int, **opts):
    """An ncnn.Net on the artifact with explicit options (what the session sets, plus `opts`)."""
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.use_int8_inference = artifact.precision == "int8"
    for k, v in opts.items():
        setattr(net.opt, k, v)
    net.load_param(str(artifact.path("model.param")))
    net.load_model(str(artifact.path("model.bin")))
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import ncnn

    from edgesdk.backends import registry
    from edgesdk.backends.base import ConvertOptions
    from edgesdk.backends.onnxruntime.session import reference_session
    from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference

    backend = registry.get("ncnn")
    onnx_path = models.efficientnet_lite0()
    spec = PreprocessSpec(**models.EFFICIENTNET_PREPROCESS)
    feeds = calibration_feeds(spec)
    evals = [{"images": preprocess_reference(models.read_bgr(p), spec)} for p in models.eval_images()]
    with reference_session(onnx_path) as ref:
        refs = [ref.run(f)["logits"][0] for f in evals]
    x = evals[0]
    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    try:
        t = time.perf_counter()
        fp32 = backend.convert(onnx_path, work / "fp32", ConvertOptions())
        fp32_s = time.perf_counter() - t
        builds = {
            "int8 every layer, KL": ConvertOptions(precision="int8", calibration=feeds),
            "int8 every layer, min-max": ConvertOptions(precision="int8", calibration=feeds, calib_method="minmax"),
            "int8 stem+depthwise float, min-max": ConvertOptions(
                precision="int8", calibration=feeds, calib_method="minmax", exclude=float_layers(onnx_path)),
        }
        artifacts = {}
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(f"fp32 conversion: {fp32_s:.1f} s")
        for name, options in builds.items():
            t = time.perf_counter()
            artifacts[name] = backend.convert(onnx_path, work / name.replace(" ", "_").replace(",", ""), options)
            size = artifacts[name].path("model.bin").stat().st_size / fp32.path("model.bin").stat().st_size
            with backend.open(artifacts[name]) as s:
                acc = accuracy(s, evals, refs)
            print(f"{name}: conversion with {len(feeds)} calibration images {time.perf_counter() - t:.1f} s "
                  f"(goal <= 60 s), bin {size:.3f} of fp32, {acc}")

        print("\nanchor = fp32 ncnn build, ours = int8 build; session defaults")
        print(HEADER)
        for threads in args.threads:
            with backend.open(fp32, threads=threads) as s32:
                for name, art in artifacts.items():
                    with backend.open(art, threads=threads) as s8:
                        a, o = compare(lambda: s32.run(x), lambda: s8.run(x), rounds=args.rounds)
                    print(row(f"{name}, {threads} thr", a, o, GOAL))

        # ncnn options that pick other kernels, both sides alike
        print("\nncnn option variants (raw ncnn.Net), the stem+depthwise float build")
        print(HEADER)
        art = artifacts["int8 stem+depthwise float, min-max"]
        x_chw = np.ascontiguousarray(x["images"][0])
        for opts in ({}, {"use_packing_layout": False}, {"use_sgemm_convolution": False},
                     {"use_winograd_convolution": False}, {"lightmode": False}):
            for threads in args.threads:
                nets = [raw_net(a, threads, **opts) for a in (fp32, art)]

                def runner(net):
                    def run():
                        with net.create_extractor() as ex:
                            ex.input("in0", ncnn.Mat(x_chw))
                            return np.array(ex.extract("out0")[1])
                    return run

                a, o = compare(runner(nets[0]), runner(nets[1]), rounds=args.rounds)
                label = ",".join(f"{k}={v}" for k, v in opts.items()) or "defaults"
                print(row(f"{label}, {threads} thr", a, o, GOAL))
                for net in nets:
                    net.clear()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
