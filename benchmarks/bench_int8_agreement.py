"""How far top-1 agreement with fp32 can go on the eval photos: int8 beside 16-bit arithmetic, same run.

    python benchmarks/bench_int8_agreement.py [--margin 0.1]

Model: EfficientNet-Lite0; images: tools.models.eval_images() (never used for calibration); the
reference: onnxruntime fp32. Rows, all through edgesdk's backends:
  - OpenVINO fp32 IR computed in f16 and in bf16 (`inference_precision`): no quantization at all, only
    rounding of every activation to 11 or 8 significant bits. bf16 keeps as many bits as int8 has
    levels, so its agreement is about the best any 8-bit model can expect on these photos;
  - OpenVINO int8 (NNCF) and ncnn int8 (ours), every layer; with the stem and first depthwise
    convolution in float (what the accuracy-budget fallback keeps first); and with the stem and every
    depthwise convolution in float (the int8 profiles' [quantize] float_layers).
For each row: strict top-1 agreement, the same on the photos where fp32's first two classes are more
than --margin logits apart, top-5 overlap both ways, mean cosine, and the fp32 margin of every flip.
Agreement on photos fp32 itself barely decides is image noise, not quantization quality: the first
lines print how many such photos there are.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_int8_ncnn import calibration_feeds  # noqa: E402
from tools import models  # noqa: E402


def margins(ref: np.ndarray) -> np.ndarray:
    top2 = np.sort(ref, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def agreement_row(name: str, ref: np.ndarray, got: np.ndarray, margin: float) -> str:
    a, g = ref.argmax(1), got.argmax(1)
    decisive = margins(ref) > margin
    top5 = sum(x.argmax() in np.argsort(-y)[:5] and y.argmax() in np.argsort(-x)[:5] for x, y in zip(ref, got))
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    flips = [round(float(ref[i, a[i]] - ref[i, g[i]]), 3) for i in np.where(a != g)[0]]
    return (f"{name:<40}{np.mean(a == g):>7.3f}{np.mean(a[decisive] == g[decisive]):>10.3f}"
            f"{top5:>5}/{len(ref):<3}{cos.mean():>9.4f}  {flips}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--margin", type=float, default=0.1, help="fp32 top-1/top-2 logit gap of a 'decisive' photo")
    args = ap.parse_args()

    from edgesdk.backends import registry
    from edgesdk.backends.base import ConvertOptions
    from edgesdk.backends.onnxruntime.session import reference_session
    from edgesdk.build.optimize import optimize
    from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference

    spec = PreprocessSpec(**models.EFFICIENTNET_PREPROCESS)
    evals = [{"images": preprocess_reference(models.read_bgr(p), spec)} for p in models.eval_images()]
    calib = calibration_feeds(spec)
    work = Path(tempfile.mkdtemp(prefix="bench-agreement-"))
    onnx_path = optimize(models.efficientnet_lite0(), work / "opt.onnx").path
    with reference_session(onnx_path) as ref_session:
        ref = np.concatenate([ref_session.run(f)["logits"] for f in evals])
    m = margins(ref)
    print(f"{len(evals)} eval photos; fp32 top-1/top-2 logit gap below 0.05: {int((m < 0.05).sum())}, "
          f"below 0.1: {int((m < 0.1).sum())}, below 0.25: {int((m < 0.25).sum())} "
          f"(logits span {ref.min():.1f}..{ref.max():.1f})")
    from edgesdk.build.model import load_model
    from edgesdk.build.quantize import resolve_float_layers

    proto = load_model(onnx_path)
    first = [n.name for n in proto.graph.node if n.op_type == "Conv"][:2]  # the stem and blocks.0's depthwise
    profile = resolve_float_layers(proto, ["stem", "depthwise"], onnx_path)  # the int8 profiles' float_layers
    rows = [("openvino", "fp32 IR, f16 arithmetic", ConvertOptions(engine={"inference_precision": "f16"})),
            ("openvino", "fp32 IR, bf16 arithmetic", ConvertOptions(engine={"inference_precision": "bf16"})),
            ("openvino", "int8, every layer", ConvertOptions(precision="int8", calibration=calib)),
            ("openvino", "int8, stem + first dw float", ConvertOptions(precision="int8", calibration=calib,
                                                                       exclude=first)),
            ("openvino", "int8, stem + every dw float", ConvertOptions(precision="int8", calibration=calib,
                                                                       exclude=profile)),
            ("ncnn", "int8 min-max, every layer", ConvertOptions(precision="int8", calibration=calib,
                                                                 calib_method="minmax")),
            ("ncnn", "int8 min-max, stem + first dw float", ConvertOptions(precision="int8", calibration=calib,
                                                                           calib_method="minmax", exclude=first)),
            ("ncnn", "int8 min-max, stem + every dw float", ConvertOptions(precision="int8", calibration=calib,
                                                                           calib_method="minmax", exclude=profile)),
            ("ncnn", "int8 KL, stem + every dw float", ConvertOptions(precision="int8", calibration=calib,
                                                                      exclude=profile))]
    print(f"\n{'build':<40}{'top-1':>7}{'decisive':>10}{'top-5':>9}{'cos mean':>9}  fp32 gaps of the flips")
    for k, (backend, name, options) in enumerate(rows):
        be = registry.get(backend)
        if be.available():
            print(f"{backend} {name:<31} skipped: {be.available()}")
            continue
        art = be.convert(onnx_path, work / f"{backend}-{k}", options)
        with be.open(art) as s:
            got = np.concatenate([s.run(f)["logits"] for f in evals])
        print(agreement_row(f"{backend} {name}", ref, got, args.margin))
    print(f"\ndecisive: the {int((m > args.margin).sum())} photos with an fp32 gap above {args.margin}")


if __name__ == "__main__":
    main()
