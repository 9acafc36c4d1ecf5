"""Our ncnn and OpenVINO artifacts vs the converters' own default outputs, same model, same run.

    python benchmarks/bench_convert.py [--threads 2]

Anchors: `pnnx model.onnx inputshape=[...]` (its default: fp16 storage) run with ncnn's default
options, and `ovc model.onnx` (its default: fp16-compressed IR) compiled with OpenVINO's defaults.
Ours: `edgesdk convert` at the same stored precision, run through edgesdk's sessions.
Ratio = ours / anchor latency (goal <= 1.0).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import HEADER, compare, row  # noqa: E402
from tools import models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import ncnn
    import openvino as ov

    from edgesdk.backends import registry
    from edgesdk.backends.ncnn.convert import find_pnnx
    from edgesdk.build.package import convert
    from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference, read_image

    onnx_path = models.efficientnet_lite0()
    spec = PreprocessSpec(**models.EFFICIENTNET_PREPROCESS)
    x = preprocess_reference(read_image(models.eval_images()[0]), spec)
    work = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        # anchors, exactly as their tools produce them by default
        shutil.copy(onnx_path, work / "model.onnx")
        subprocess.run([str(find_pnnx()), "model.onnx", "inputshape=[1,3,224,224]"], cwd=work, check=True,
                       capture_output=True)
        net = ncnn.Net()
        net.opt.num_threads = args.threads
        net.load_param(str(work / "model.ncnn.param"))
        net.load_model(str(work / "model.ncnn.bin"))
        x_chw = np.ascontiguousarray(x[0])

        def pnnx_default():
            ex = net.create_extractor()
            ex.input("in0", ncnn.Mat(x_chw))
            return np.array(ex.extract("out0")[1])

        ovc = shutil.which("ovc") or str(Path(sys.executable).parent / "ovc")
        subprocess.run([ovc, "model.onnx", "--output_model", "ovc/model.xml"], cwd=work, check=True,
                       capture_output=True)
        core = ov.Core()
        compiled = core.compile_model(str(work / "ovc/model.xml"), "CPU",
                                      {"INFERENCE_NUM_THREADS": args.threads})
        req = compiled.create_infer_request()

        def ovc_default():
            return req.infer({0: x})

        # The same ovc IR compiled for f32 compute: OpenVINO's CPU default is bf16 on AMX/AVX512-BF16
        # machines, which is faster but changes answers (see the accuracy line printed below).
        compiled32 = core.compile_model(str(work / "ovc/model.xml"), "CPU",
                                        {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"})
        req32 = compiled32.create_infer_request()

        def ovc_f32():
            return req32.infer({0: x})

        print(f"OpenVINO default compute precision here: {compiled.get_property('INFERENCE_PRECISION_HINT')}")
        _accuracy(onnx_path, spec, {"ovc default": lambda f: req.infer({0: f})[compiled.outputs[0]],
                                    "ovc f32": lambda f: req32.infer({0: f})[compiled32.outputs[0]]})
        print(f"EfficientNet-Lite0 1x3x224x224, {args.threads} threads")
        print(HEADER)
        cases = [("ncnn fp16 (pnnx default)", "ncnn", "fp16", pnnx_default),
                 ("openvino fp16-IR (ovc default)", "openvino", "fp16", ovc_default),
                 ("openvino fp16-IR (ovc IR, f32 compute)", "openvino", "fp16", ovc_f32)]
        for name, backend, precision, anchor in cases:
            art = convert(onnx_path, backend, work / f"ours-{backend}", precision=precision, spec=spec, samples=2).artifact
            sess = registry.get(backend).open(art, threads=args.threads)
            # same model on both sides: same answer (the anchors' fp16 arithmetic differs in the last bits)
            ours_out = sess.run({"images": x})["logits"].ravel()
            theirs = anchor()
            theirs = np.asarray(next(iter(theirs.values())) if backend == "openvino" else theirs).ravel()
            cos = float(ours_out @ theirs / np.linalg.norm(ours_out) / np.linalg.norm(theirs))
            if ours_out.argmax() != theirs.argmax() or cos < 0.99:
                raise SystemExit(f"{name}: outputs differ (cosine {cos:.4f}); not the same model")
            a, o = compare(anchor, lambda: sess.run({"images": x}), rounds=args.rounds)
            print(row(name, a, o, "<= 1.0"))
            sess.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _accuracy(onnx_path, spec, runners: dict) -> None:
    """Top-1 agreement and worst cosine of each runner against onnxruntime fp32 on the eval photos."""
    from edgesdk.backends.onnxruntime.session import reference_session
    from edgesdk.device.preprocess import preprocess_reference, read_image

    xs = [preprocess_reference(read_image(p), spec) for p in models.eval_images()]
    with reference_session(onnx_path) as ref:
        refs = [ref.run({"images": x})["logits"].ravel() for x in xs]
    for name, run in runners.items():
        outs = [np.asarray(run(x)).ravel() for x in xs]
        agree = np.mean([r.argmax() == o.argmax() for r, o in zip(refs, outs)])
        cos = min(float(r @ o / np.linalg.norm(r) / np.linalg.norm(o)) for r, o in zip(refs, outs))
        print(f"  accuracy of {name:<12} vs onnxruntime fp32 on {len(xs)} photos: top-1 {agree:.3f}, cosine min {cos:.5f}")


if __name__ == "__main__":
    main()
