"""Latency percentiles, throughput and the pre/infer/post split of a loaded Model. Device side."""
from __future__ import annotations

import os
import platform
import time

import numpy as np

from edgesdk.errors import EdgeSDKError


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _synthetic_feeds(model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for t in model.inputs:
        if not t.is_static:
            raise EdgeSDKError(f"input {t.name!r} has dynamic dims {list(t.shape)}: benchmark with real frames")
        feeds[t.name] = rng.standard_normal(t.shape).astype(t.dtype) if t.dtype.startswith("float") \
            else np.ones(t.shape, t.dtype)
    return feeds


def benchmark(model, frames: list[np.ndarray] | None = None, iters: int = 100, warmup: int = 10,
              seconds: float | None = None, streams: int = 1) -> dict:
    """Time `iters` runs (or `seconds` worth) one frame at a time, then `streams` frames in flight
    for throughput. Frames go through the full path (preprocess, engine, postprocess); without
    frames (or a preprocessing spec) the engine alone is timed on synthetic tensors."""
    for name, value, lo in (("iters", iters, 1), ("warmup", warmup, 0), ("streams", streams, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise EdgeSDKError(f"benchmark {name} must be an integer >= {lo}, got {value!r}")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 < seconds < float("inf")):
        raise EdgeSDKError(f"benchmark seconds must be a positive number, got {seconds!r}")
    use_frames = bool(frames) and model.spec is not None
    feeds = None if use_frames else _synthetic_feeds(model)
    pre, inf, post, total = [], [], [], []

    def one(k: int) -> None:
        t0 = time.perf_counter()
        if use_frames:
            frame = frames[k % len(frames)]
            x = model.prepare(frame)
        else:
            x = feeds
        t1 = time.perf_counter()
        y = model.infer(x)
        t2 = time.perf_counter()
        if use_frames:
            model.postprocess(y, frame.shape[:2])
        t3 = time.perf_counter()
        pre.append(t1 - t0)
        inf.append(t2 - t1)
        post.append(t3 - t2)
        total.append(t3 - t0)

    for k in range(warmup):
        one(k)
    pre.clear(), inf.clear(), post.clear(), total.clear()
    deadline = time.perf_counter() + seconds if seconds else None
    k = 0
    while (k < iters) if deadline is None else (time.perf_counter() < deadline or k < 5):
        one(k)
        k += 1

    fps = 1.0 / float(np.mean(total))
    if streams > 1 and use_frames:
        n = max(2 * streams, min(200, k))
        t = time.perf_counter()
        for _ in model.stream((frames[i % len(frames)] for i in range(n)), workers=streams):
            pass
        fps = n / (time.perf_counter() - t)
    ms = lambda xs, q: float(np.percentile(np.asarray(xs) * 1e3, q))  # noqa: E731
    return {
        "p50_ms": ms(total, 50), "p90_ms": ms(total, 90), "p99_ms": ms(total, 99),
        "throughput_fps": fps,
        "pre_ms": ms(pre, 50), "infer_ms": ms(inf, 50), "post_ms": ms(post, 50),
        "iterations": k, "threads": model.threads or 0, "streams": streams,
        "engine": model.backend, "precision": model.precision, "cpu": cpu_name(),
        "cores": os.cpu_count(), "input": "frames" if use_frames else "synthetic tensors",
        "latencies_ms": [float(x * 1e3) for x in total],
    }
