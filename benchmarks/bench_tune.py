"""edgesdk tune against every shipped single-engine host profile, measured in the same run.

For EfficientNet-Lite0 and PP-OCRv4 det: `tune` picks engine, precision, threads and workers on this machine
(its Pareto table is printed); then the tuned bundle (loaded with its tuning.json) and a bundle of each
shipped x86 profile are timed one frame at a time (preprocess, engine, postprocess) on the same real frames
in interleaved rounds. ratio = tuned / profile on the median round, and on each side's worst round (a
configuration that is fast only while the machine is quiet shows there): the goal is <= 1 for every profile.

    .venv/bin/python benchmarks/bench_tune.py [--minutes 5] [--rounds 5] [--model NAME] [--work DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("efficientnet-lite0", "ppocr-v4-det")
PROFILES = ("x86-onnxruntime", "x86-openvino", "host", "x86-openvino-int8")  # host: OpenVINO fp32 (targets/host.toml)


def compare(name: str, onnx: Path, calib: list[Path], frames, work: Path, minutes: float, rounds: int,
            shapes: dict | None) -> None:
    import edgesdk
    from benchmarks.common import median_ms
    from edgesdk.build.tune import tune
    from edgesdk.build.tune_report import ACCURACY_DECIMALS, accuracy, summary_text

    print(f"## {name}: edgesdk tune --minutes {minutes:g} (load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores)\n", flush=True)
    result = tune(onnx, calib, work / f"{name}-tuned", minutes=minutes, shapes=shapes, rounds=3,
                  progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    print(summary_text(result) + "\n", flush=True)
    bundles = {"tuned": work / f"{name}-tuned"}
    for p in PROFILES:
        out = work / f"{name}-{p}"
        try:
            edgesdk.package(onnx, p, out, calib=calib, shapes=shapes)
            bundles[p] = out
        except edgesdk.errors.EdgeSDKError as e:
            print(f"{p}: not packaged: {str(e).splitlines()[0]}")
    models = {k: edgesdk.load(b) for k, b in bundles.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    loads = []
    for m in models.values():
        for f in frames[:3]:
            m(f)
    for r in range(rounds):
        order = list(models)[r % len(models):] + list(models)[: r % len(models)]
        for k in order:
            times[k].append(statistics.median(median_ms(lambda f=f: models[k](f), 3) for f in frames))
        loads.append(os.getloadavg()[0])
    for m in models.values():
        m.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    worst = {k: max(v) for k, v in times.items()}
    w = result["winner"]
    print(f"tuned: {w['candidate']} ({w['session']}, threads {w['threads'] or 'default'}, workers {w['workers']}), "
          f"accuracy {accuracy(w):.{ACCURACY_DECIMALS}f} vs ONNX Runtime (cosine of the samples that fire; "
          f"{w.get('near_zero', 0)} barely firing held by max-abs); ranked by the {result['rank_by']}; {rounds} rounds, "
          f"load average {min(loads):.2f}-{max(loads):.2f}\n")
    print(f"{'profile':<22}{'profile ms':>12}{'tuned ms':>10}{'ratio':>8}{'worst-round ratio':>19}  goal <= 1")
    for p in PROFILES:
        if p in med:
            print(f"{p:<22}{med[p]:>12.2f}{med['tuned']:>10.2f}{med['tuned'] / med[p]:>8.3f}"
                  f"{worst['tuned'] / worst[p]:>19.3f}")
    if "host" in med and "x86-openvino" in med:  # the same profile under two names: what noise alone does
        print(f"noise floor: host / x86-openvino (identical profiles) {med['host'] / med['x86-openvino']:.3f} median, "
              f"{worst['host'] / worst['x86-openvino']:.3f} worst round")
    print()


def main() -> None:
    from edgesdk.device.preprocess import read_image
    from tools import models

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0, help="tune's budget per model")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", choices=MODELS, action="append", help="only this model (default: both)")
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgesdk-bench-tune-"))
    calib = models.calibration_images()
    photos = [read_image(p) for p in models.eval_images()[:6]]
    chosen = args.model or MODELS
    if "efficientnet-lite0" in chosen:
        compare("efficientnet-lite0", models.efficientnet_lite0(), calib, photos, work, args.minutes, args.rounds,
                None)
    if "ppocr-v4-det" in chosen:
        text = [read_image(models.text_image())] + photos[:3]
        compare("ppocr-v4-det", models.ppocr_det(), [models.text_image()] + calib[:30], text, work, args.minutes,
                args.rounds, {"x": (1, 3, 640, 640)})


if __name__ == "__main__":
    main()
