"""Activation statistics for ncnn int8: |x| histograms, min-max and ACIQ per blob, and the KL
threshold search (TensorRT's and ncnn2table's entropy method). numpy only."""
from __future__ import annotations

import numpy as np

INT8_MAX = 127
HIST_BINS = 2048
KL_TARGET_BINS = 128
# Optimal clipping threshold / Laplace scale b for 8-bit uniform quantization (Banner et al., ACIQ, 2019).
ACIQ_LAPLACE_ALPHA = 9.89

def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def kl_threshold(hist: np.ndarray, bin_width: float, target: int = KL_TARGET_BINS) -> float:
    """The |x| threshold minimising KL(P || Q): P the histogram clipped at the threshold (outliers
    added to its last bin), Q the kept bins merged into `target` levels and spread back evenly over
    the bins P has mass in. Computed for every candidate at once from prefix sums."""
    h = np.asarray(hist, dtype=np.float64)
    total = h.sum()
    if total <= 0 or len(h) <= target:
        return len(h) * bin_width
    kept = np.arange(target, len(h) + 1)  # candidate numbers of kept bins
    csum = np.concatenate([[0.0], np.cumsum(h)])
    nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    tail = total - csum[kept]
    last = h[kept - 1]
    # sum of p log p over P's bins, the last one holding the clipped tail
    p_entropy = hlogh[kept] - _xlogx(last) + _xlogx(last + tail)
    edges = (np.arange(target + 1)[None, :] * kept[:, None]) // target
    sums = csum[edges[:, 1:]] - csum[edges[:, :-1]]
    counts = (nonzero[edges[:, 1:]] - nonzero[edges[:, :-1]]).astype(np.float64)
    counts[:, -1] += (last == 0) & (tail > 0)  # the last bin holds mass in P through the tail alone
    level = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    p_mass = sums.copy()
    p_mass[:, -1] += tail
    # P mass where Q has none (an empty last chunk that receives the tail) is penalised, not infinite
    cross = (p_mass * np.log(np.maximum(level, 1e-12))).sum(axis=1)
    with np.errstate(divide="ignore"):
        kl = (p_entropy - cross) / total + np.log(csum[kept] / total)
    kl[csum[kept] <= 0] = np.inf
    return float(kept[int(np.argmin(kl))] * bin_width)


class BlobStats:
    """What calibration keeps of one blob over all samples: |x| range and histogram, per-channel means."""

    def __init__(self):
        self.absmax = 0.0
        self.abs_sum = 0.0
        self.count = 0
        self.channel_sum: np.ndarray | None = None
        self.samples = 0
        # |x| histogram over [0, hist_range): the range doubles (merging bin pairs) when a larger value
        # arrives, so one pass over the samples is enough and the used range stays >= half the bins
        self.hist = np.zeros(HIST_BINS, np.int64)
        self.hist_range = 0.0

    def add(self, x: np.ndarray) -> None:
        a = np.abs(x.ravel())
        peak = float(a.max(initial=0.0))
        self.absmax = max(self.absmax, peak)
        self.abs_sum += float(a.sum(dtype=np.float64))
        self.count += a.size
        # per input channel (ncnn's first axis of a c,h,w blob; each value of a flat one)
        means = x.reshape(x.shape[0], -1).mean(axis=1, dtype=np.float64) if x.ndim > 1 else x.astype(np.float64)
        self.channel_sum = means if self.channel_sum is None else self.channel_sum + means
        self.samples += 1
        if peak <= 0:
            return
        if self.hist_range == 0:
            self.hist_range = peak
        while peak > self.hist_range:
            self.hist = np.concatenate([self.hist.reshape(-1, 2).sum(axis=1), np.zeros(HIST_BINS // 2, np.int64)])
            self.hist_range *= 2
        idx = np.minimum((a * (HIST_BINS / self.hist_range)).astype(np.int64), HIST_BINS - 1)
        counts = np.bincount(idx, minlength=HIST_BINS)
        # exact zeros (ReLU outputs, padding) stay exact in int8 at any scale: counted, they would
        # swamp the first bin and blunt the threshold search (ncnn2table skips them too)
        counts[0] -= a.size - np.count_nonzero(a)
        self.hist += counts

    @property
    def channel_mean(self) -> np.ndarray:
        return self.channel_sum / max(self.samples, 1)

    def threshold(self, method: str) -> float:
        """|x| beyond which values saturate in int8."""
        if method == "minmax":
            return self.absmax
        if method == "aciq":
            # Laplace fit of x around 0, b = mean |x|; clipped at the 8-bit optimum, never beyond the data
            return min(self.absmax, ACIQ_LAPLACE_ALPHA * self.abs_sum / max(self.count, 1))
        if self.absmax <= 0:
            return 0.0
        return min(self.absmax, kl_threshold(self.hist, self.hist_range / HIST_BINS))


def calibrate(session, feeds: list[dict[str, np.ndarray]], blobs: list[str]) -> dict[str, BlobStats]:
    """Statistics of each named blob from one run of `session` (an fp32 NcnnSession) per feed."""
    stats = {b: BlobStats() for b in blobs}
    # Callers list blobs deepest first: the first extraction runs the whole net and the rest are
    # already computed (extracting shallow blobs first made ncnn take several times longer).
    for feed in feeds:
        for b, x in session.blobs(feed, blobs).items():
            stats[b].add(x)
    return stats


def input_scale(threshold: float) -> float:
    """127 / threshold; 1 for a blob that was all zeros in calibration (any scale keeps zeros exact)."""
    return float(INT8_MAX / threshold) if threshold > 0 and np.isfinite(threshold) else 1.0


# ---------------------------------------------------------------------------------------- names
