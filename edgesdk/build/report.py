"""The bundle's report.md: parity, quantization, the latency histogram on the build host."""
from __future__ import annotations

import numpy as np


def host_benchmark(model, frames: list[np.ndarray], iters: int = 30) -> dict:
    from edgesdk.device.bench import benchmark

    return benchmark(model, frames, iters=iters, warmup=5)


def report_md(manifest: dict, latencies: list[float] | None) -> str:
    v = manifest["validation"]
    lines = [f"# {manifest['target']['name']}: {manifest['backend']} {manifest['precision']}", "",
             f"Built with edgesdk {manifest['versions']['edgesdk']} from `{manifest['source']['model']}`.", ""]
    lines += ["## Parity against ONNX Runtime", ""]
    if v.get("outputs"):
        lines += ["| output | cosine min | max abs | max rel | top-1 | result |", "|---|---|---|---|---|---|"]
        for o in v["outputs"]:
            top1 = "-" if o["top1_agreement"] is None else f"{o['top1_agreement']:.3f}"
            lines.append(f"| {o['name']} | {o['cosine_min']:.6f} | {o['max_abs']:.3g} | {o['max_rel']:.3g} | {top1} "
                         f"| {'ok' if o['passed'] else 'FAIL'} |")
        tol = v["tolerance"]
        lines += ["", f"Tolerance: cosine >= {tol['min_cosine']} (or max abs <= {tol['atol']}), "
                      f"top-1 >= {tol['min_top1']}."]
    else:
        lines.append(f"Not validated on the build machine: {'; '.join(v.get('notes', []))}. "
                     "`Model.check()` replays the golden samples on the device.")
    q = manifest.get("quantization")
    if q:
        lines += ["", "## INT8 quantization", "",
                  f"Calibrated ({q['method']}) on {q['calibration_images']} images; the accuracy budget "
                  f"(top-1 drop <= {q['budget']['max_top1_drop']}, cosine >= {q['budget']['min_cosine']}) checked on "
                  f"{q['held_back_images']} held-back images on {q['checked_on'] or 'no engine here'}.", ""]
        if q["steps"]:
            from edgesdk.build.budget import BudgetCheck

            lines += ["| method | layers in float | check | budget |", "|---|---|---|---|"]
            for st in q["steps"]:
                c = st["check"]
                lines.append(f"| {st.get('method', q['method'])} | {len(st['float_nodes'])} | "
                             f"{BudgetCheck(**c).describe()} | {'held' if c['passed'] else 'missed'} |")
        if q.get("float_layers"):
            lines += ["", f"Float by the profile's float_layers: {len(q['float_layers'])} layer(s)."]
        if q["fallback"]:
            lines += ["", "Kept in float by the budget: " + ", ".join(f"`{n}`" for n in q["fallback"]) + "."]
        if q["latency_ms"]:
            lines += ["", f"Latency cost of the fallback: {q['latency_ms']['int8']:.2f} ms plain int8 -> "
                          f"{q['latency_ms']['final']:.2f} ms."]
    b = manifest["benchmark"]
    lines += ["", "## Latency on the build machine", ""]
    if b:
        lines += [f"p50 {b['p50_ms']:.2f} ms, p90 {b['p90_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms; "
                  f"{b['throughput_fps']:.1f} frames/s; preprocess {b['pre_ms']:.2f} ms, inference "
                  f"{b['infer_ms']:.2f} ms, postprocess {b['post_ms']:.2f} ms ({b['threads']} threads).", ""]
        if latencies:
            lines += ["```", *histogram(latencies), "```"]
    else:
        lines.append(f"{manifest['benchmark_skipped'][0].upper()}{manifest['benchmark_skipped'][1:]}."
                     if manifest.get("benchmark_skipped") else "The engine does not run on the build machine.")
    return "\n".join(lines) + "\n"


def histogram(values: list[float], bins: int = 10, width: int = 40) -> list[str]:
    """A text latency plot: milliseconds per bin and a bar per count."""
    lo, hi = min(values), max(values)
    step = (hi - lo) / bins or 1e-9
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    top = max(counts)
    return [f"{lo + i * step:8.2f} ms | {'#' * max(1 if c else 0, round(width * c / top))} {c}" for i, c in enumerate(counts)]
