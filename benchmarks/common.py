"""Shared timing for the side-by-side benchmarks: anchor and ours measured in the same run,
interleaved in rounds so machine noise hits both alike; the ratio is what is reported."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_ms(fn: Callable[[], object], iters: int) -> float:
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def compare(anchor: Callable[[], object], ours: Callable[[], object], rounds: int = 5, iters: int = 20,
            warmup: int = 5) -> tuple[float, float]:
    """(anchor ms, ours ms): medians over interleaved rounds."""
    for _ in range(warmup):
        anchor()
        ours()
    a, o = [], []
    for _ in range(rounds):
        a.append(median_ms(anchor, iters))
        o.append(median_ms(ours, iters))
    return statistics.median(a), statistics.median(o)


def row(name: str, anchor_ms: float, ours_ms: float, goal: str = "") -> str:
    return f"{name:<44}{anchor_ms:>10.3f}{ours_ms:>10.3f}{ours_ms / anchor_ms:>9.3f}  {goal}"


HEADER = f"{'case':<44}{'anchor ms':>10}{'ours ms':>10}{'ratio':>9}  goal"
