"""The int8 accuracy budget: how far int8 may stray from fp32 on held-back images, and the check.

Top-1 is judged on the photos fp32 decides, and a sequence of class probabilities (a CTC text
recognizer's [1, T, classes]) per time step, on the steps fp32 decides: the text read is what matters,
and a cosine over mostly-blank steps says little of it. Other outputs are judged by cosine, except that a sample whose
output barely fires (a text detector's probability map on a photo without text: every value near 0,
where a rounding step swings the cosine anywhere from 0 to 1) passes on max-abs within the parity
gate's int8 atol, as device.compare's parity gate judges it. Build side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgesdk.errors import EdgeSDKError

@dataclass(frozen=True)
class Budget:
    """How far int8 may stray from fp32 on held-back images. None: not checked."""

    max_top1_drop: float | None = None  # fraction of the photos fp32 decides whose top-1 class changes
    min_cosine: float | None = None  # worst image's output cosine
    # fp32 "decides" a photo when its top-1 probability beats the runner-up by this much: a near-tie is
    # flipped by any rounding (bf16 arithmetic too), so it says nothing about int8
    margin: float = 0.1

    def __bool__(self) -> bool:
        return self.max_top1_drop is not None or self.min_cosine is not None

    def describe(self) -> str:
        parts = []
        if self.max_top1_drop is not None:
            parts.append(f"top-1 drop <= {self.max_top1_drop:g} (photos fp32 decides by >= {self.margin:g})")
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        return " and ".join(parts) or "none"


@dataclass
class BudgetCheck:
    samples: int
    cosine_min: float
    top1_drop: float | None  # among the photos fp32 decides; None: no classifier-shaped output
    passed: bool
    # fp32's logit gap between its class and int8's, per image whose top-1 changed: a gap near 0 is a
    # photo fp32 itself barely decides, which any rounding flips (benchmarks/bench_int8_agreement.py)
    flip_gaps: list[float] = field(default_factory=list)
    cosine_mean: float | None = None
    decided: int | None = None  # photos whose fp32 top-1 leads by the margin: what top1_drop rests on
    flips: int | None = None  # of those, how many int8 changes
    folds: int = 1  # 2: every photo checked by the int8 model calibrated without it
    # samples under the cosine budget that pass on max-abs: their output barely fires (see the docstring)
    near_zero: int = 0
    max_abs: float | None = None  # worst |int8 - fp32| over the samples judged by it
    atol: float | None = None
    missed: int = 0  # samples under the cosine budget and over the atol
    judged_cosine_min: float | None = None  # over the samples not held on max-abs: the cosine that counts
    per: str = "photo"  # what `decided` counts: photos, or the time steps of a sequence output

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> str:
        drop = "" if self.top1_drop is None else (
            f"top-1 drop {self.top1_drop:.3f} ({self.flips} of {self.decided} decided {self.per}s), "
            if self.decided is not None else f"top-1 drop {self.top1_drop:.3f}, ")
        mean = "" if self.cosine_mean is None else f", mean {self.cosine_mean:.4f}"
        how = " by 2-fold cross-check" if self.folds > 1 else ""
        gaps = f" (fp32 gaps of the flips: {', '.join(f'{g:.3g}' for g in self.flip_gaps)})" if self.flip_gaps else ""
        near = (f"; {self.near_zero} barely firing held by max-abs {self.max_abs:.3g} <= atol {self.atol:g}, "
                f"{self.samples - self.near_zero} judged by cosine (min {self.judged_cosine_min:.4f}, "
                f"{self.missed} under)" if self.near_zero else "")
        return f"{drop}cosine min {self.cosine_min:.4f}{mean} on {self.samples} images{how}{gaps}{near}"


def check_budget(refs: list[dict], gots: list[dict], budget: Budget, folds: int = 1) -> BudgetCheck:
    """Held-back outputs of fp32 (refs) and int8 (gots) against the budget: top-1 is judged on the
    photos fp32 decides (top-1 probability ahead of the runner-up by budget.margin); min_cosine per
    sample and output, where an output under it still passes when its max abs error is within the
    int8 parity atol (it barely fires: the cosine of two near-zero maps says nothing)."""
    from edgesdk.device.compare import TOLERANCES, Tolerance, compare, cosine

    report = compare(refs, gots, "int8", Tolerance(min_cosine=-1.0, atol=float("inf"), min_top1=0.0))
    decided, flips, gaps, per = _top1_figures(refs, gots, budget.margin)
    if budget.max_top1_drop is not None and decided is None:
        raise EdgeSDKError("[quantize] max_top1_drop needs a classifier output ([N, classes], or class "
                           "probabilities per time step [N, T, classes]); this model has none: give min_cosine instead")
    drop = None if decided is None else (flips / decided if decided else 0.0)
    atol, near, missed, worst, judged = TOLERANCES["int8"].atol, 0, 0, None, []
    if budget.min_cosine is not None:
        for ref, got in zip(refs, gots):
            errs = [(cosine(r, got[n]), _max_abs(r, got[n])) for n, r in ref.items()]
            if all(c >= budget.min_cosine for c, _ in errs) or not all(
                    c >= budget.min_cosine or m <= atol for c, m in errs):
                judged.append(min(c for c, _ in errs))
                missed += judged[-1] < budget.min_cosine
            else:
                near += 1
                worst = max([worst or 0.0] + [m for c, m in errs if c < budget.min_cosine])
    ok = (budget.max_top1_drop is None or drop <= budget.max_top1_drop + 1e-9) and not missed
    cos_mean = float(np.mean([o.cosine_mean for o in report.outputs])) if report.outputs else None
    return BudgetCheck(len(refs), report.cosine_min, drop, bool(ok), gaps,
                       cos_mean, decided, flips, folds, near, worst, atol if near else None, missed,
                       min(judged) if judged else None, per)


def _max_abs(ref, got) -> float:
    r, g = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    return float(np.max(np.abs(r - g))) if r.size else 0.0


def _probabilities(rows: np.ndarray) -> np.ndarray:
    if rows.min() >= 0 and np.allclose(rows.sum(1), 1.0, atol=1e-3):
        return rows
    e = np.exp(rows - rows.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def decision_rows(ref: np.ndarray) -> np.ndarray | None:
    """The rows a top-1 is taken over: a classifier's [N, C] (compare.classifier_rows), or a sequence of
    class probabilities [N, T, C] (every step non-negative and summing to 1, as a CTC recognizer's
    softmax) as [N*T, C]; None for any other output."""
    from edgesdk.device.compare import classifier_rows

    rows = classifier_rows(ref)
    if rows is not None or ref.ndim != 3 or ref.shape[2] < 2 or not ref.size:
        return rows
    steps = ref.reshape(-1, ref.shape[2])
    return steps if steps.min() >= 0 and np.allclose(steps.sum(1), 1.0, atol=1e-3) else None


def _top1_figures(refs: list[dict], gots: list[dict], margin: float) -> tuple[int | None, int, list[float], str]:
    """One pass over the decision rows (decision_rows): how many fp32 decides (None without any such
    output), how many of those int8 flips, fp32's gap between its class and int8's for every flip
    (decided or not: a gap near 0 is a near-tie any rounding flips), and what a row is (photo or time step)."""
    decided, flips, gaps, any_rows, per = 0, 0, [], False, "photo"
    for ref, got in zip(refs, gots):
        for name, r in ref.items():
            r = np.asarray(r, dtype=np.float64)
            rows = decision_rows(r)
            if rows is None:
                continue
            any_rows, per = True, "time step" if r.ndim == 3 else per
            g = np.asarray(got[name], dtype=np.float64).reshape(rows.shape)
            top2 = np.sort(_probabilities(rows), axis=1)[:, -2:]
            sure = top2[:, 1] - top2[:, 0] >= margin
            changed = rows.argmax(1) != g.argmax(1)
            decided += int(sure.sum())
            flips += int((sure & changed).sum())
            gaps += [round(float(x[x.argmax()] - x[y.argmax()]), 4) for x, y in zip(rows[changed], g[changed])]
    return (decided if any_rows else None), flips, gaps, per


def has_classifier_output(refs: list[dict]) -> bool:
    return any(decision_rows(np.asarray(r, dtype=np.float64)) is not None for ref in refs[:1] for r in ref.values())


def _better(a: BudgetCheck, b: BudgetCheck) -> bool:
    # fewer samples missing the budget first: a near-zero map's cosine (held on max-abs) decides nothing
    key = lambda c: (-(c.top1_drop or 0.0), -c.missed, c.cosine_min)  # noqa: E731
    return key(a) > key(b)
