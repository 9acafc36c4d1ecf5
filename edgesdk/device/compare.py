"""Parity of a converted model against the ONNX reference (onnxruntime).

Per output: cosine similarity, max abs and max rel error, top-1 agreement for classifier-shaped
outputs. Cosine alone misleads on near-zero outputs, so an output also passes when its max abs error
is within `atol` of a reference that barely fires. A failed report names the tolerance that would
have passed and, where the backend exposes intermediate tensors, the first layer that diverges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from edgesdk.errors import EdgeSDKError


@dataclass(frozen=True)
class Tolerance:
    min_cosine: float
    atol: float  # max abs error accepted regardless of cosine (near-zero outputs)
    min_top1: float = 1.0  # fraction of samples whose argmax must agree (classifier outputs)


# Per stored precision. int8 gets its real budget from the profile's [quantize] table.
TOLERANCES = {
    "fp32": Tolerance(min_cosine=0.9999, atol=1e-4),
    "fp16": Tolerance(min_cosine=0.999, atol=1e-2),
    "int8": Tolerance(min_cosine=0.99, atol=5e-2, min_top1=0.98),
}


def tolerance_for(precision: str, min_cosine: float | None = None, min_top1: float | None = None) -> Tolerance:
    if precision not in TOLERANCES:
        raise EdgeSDKError(f"unknown precision {precision!r}; expected one of {', '.join(TOLERANCES)}")
    t = TOLERANCES[precision]
    return Tolerance(
        min_cosine=t.min_cosine if min_cosine is None else float(min_cosine),
        atol=t.atol,
        min_top1=t.min_top1 if min_top1 is None else float(min_top1),
    )


@dataclass
class OutputParity:
    name: str
    samples: int
    cosine_min: float  # worst sample
    cosine_mean: float
    max_abs: float
    max_rel: float  # relative to the reference's largest magnitude
    ref_absmax: float
    top1_agreement: float | None  # None when the output is not classifier-shaped
    passed: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ParityReport:
    precision: str
    tolerance: Tolerance
    outputs: list[OutputParity]
    divergence: dict | None = None  # first layer that diverges, when located
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def cosine_min(self) -> float:
        return min(o.cosine_min for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max(o.max_abs for o in self.outputs)

    @property
    def top1_agreement(self) -> float | None:
        vals = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(vals) if vals else None

    def would_pass(self) -> dict:
        """The loosest bounds this run needed: what the tolerance would have to be to pass."""
        return {"min_cosine": self.cosine_min, "atol": self.max_abs, "min_top1": self.top1_agreement}

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "precision": self.precision,
            "cosine_min": self.cosine_min,
            "max_abs": self.max_abs,
            "top1_agreement": self.top1_agreement,
            "tolerance": dict(self.tolerance.__dict__),
            "would_pass": self.would_pass(),
            "outputs": [o.to_dict() for o in self.outputs],
            "divergence": self.divergence,
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        lines = [f"{'output':<28}{'cosine_min':>12}{'max_abs':>12}{'max_rel':>12}{'top1':>8}  result"]
        for o in self.outputs:
            top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.3f}"
            lines.append(f"{o.name:<28}{o.cosine_min:>12.6f}{o.max_abs:>12.3g}{o.max_rel:>12.3g}{top1:>8}  "
                         f"{'ok' if o.passed else 'FAIL'}")
        t = self.tolerance
        lines.append(f"{self.precision}: need cosine >= {t.min_cosine} (or max_abs <= {t.atol}), top-1 >= {t.min_top1}")
        if not self.passed:
            w = self.would_pass()
            lines.append(f"would pass with min_cosine <= {w['min_cosine']:.6f}, atol >= {w['atol']:.3g}"
                         + (f", min_top1 <= {w['min_top1']:.3f}" if w["min_top1"] is not None else ""))
        if self.divergence:
            d = self.divergence
            lines.append(f"first divergence: {d['op_type']} node {d['node']!r} output {d['tensor']!r} "
                         f"(cosine {d['cosine']:.6f}, max_abs {d['max_abs']:.3g})")
        lines.extend(self.notes)
        return "\n".join(lines)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def classifier_rows(ref: np.ndarray) -> np.ndarray | None:
    """[N, C] or [N, C, 1, 1] with enough classes for argmax to mean something, as [N, C]; else None."""
    if ref.ndim not in (2, 4) or (ref.ndim == 4 and ref.shape[2:] != (1, 1)):
        return None
    rows = ref.reshape(ref.shape[0], -1)
    return rows if rows.shape[1] >= 2 else None


def compare_output(name: str, refs: list[np.ndarray], gots: list[np.ndarray], tol: Tolerance) -> OutputParity:
    if len(refs) != len(gots) or not refs:
        raise EdgeSDKError(f"output {name!r}: {len(refs)} reference samples vs {len(gots)} converted samples")
    cos, max_abs, ref_absmax, agree, classifier = [], 0.0, 0.0, 0, True
    for i, (r, g) in enumerate(zip(refs, gots)):
        r, g = np.asarray(r), np.asarray(g)
        if r.shape != g.shape:
            raise EdgeSDKError(f"output {name!r} sample {i}: shape {list(g.shape)} from the converted model, "
                               f"reference has {list(r.shape)}")
        rf, gf = r.astype(np.float64), g.astype(np.float64)
        if not np.all(np.isfinite(gf)):
            max_abs = float("inf")
        cos.append(cosine(rf, gf))
        if r.size:
            max_abs = max(max_abs, float(np.max(np.abs(rf - gf))))
            ref_absmax = max(ref_absmax, float(np.max(np.abs(rf))))
        rows = classifier_rows(rf)
        classifier = classifier and rows is not None
        if classifier:
            agree += int(np.all(rows.argmax(1) == gf.reshape(rows.shape).argmax(1)))
    top1 = agree / len(refs) if classifier else None
    max_rel = max_abs / ref_absmax if ref_absmax > 0 else (0.0 if max_abs == 0 else float("inf"))
    ok = (min(cos) >= tol.min_cosine or max_abs <= tol.atol) and (top1 is None or top1 >= tol.min_top1)
    return OutputParity(name, len(refs), min(cos), float(np.mean(cos)), max_abs, max_rel, ref_absmax, top1, bool(ok))


def compare(refs: list[dict[str, np.ndarray]], gots: list[dict[str, np.ndarray]], precision: str,
            tolerance: Tolerance | None = None) -> ParityReport:
    """Compare per-sample output dicts of the reference and the converted model."""
    tol = tolerance or tolerance_for(precision)
    if not refs:
        raise EdgeSDKError("parity needs at least one input sample")
    names = list(refs[0])
    missing = [n for n in names if n not in gots[0]]
    if missing:
        raise EdgeSDKError(f"converted model lacks outputs {missing}; it has {sorted(gots[0])}")
    outputs = [compare_output(n, [r[n] for r in refs], [g[n] for g in gots], tol) for n in names]
    return ParityReport(precision, tol, outputs)


def check_parity(reference, candidate, feeds: Iterable[dict[str, np.ndarray]], precision: str,
                 tolerance: Tolerance | None = None,
                 locate: Callable[[dict[str, np.ndarray]], dict | None] | None = None) -> ParityReport:
    """Run the same feeds through both sessions and compare. When it fails and `locate` is given,
    it is called with the worst sample's feeds to find the first diverging layer."""
    feeds = list(feeds)
    refs = [reference.run(f) for f in feeds]
    gots = [candidate.run(f) for f in feeds]
    report = compare(refs, gots, precision, tolerance)
    if not report.passed and locate is not None:
        worst = min(range(len(feeds)), key=lambda i: min(cosine(refs[i][n], gots[i][n]) for n in refs[i]))
        report.divergence = locate(feeds[worst])
    return report


def first_divergence(order: list[tuple[str, str, str]], ref_values: dict[str, np.ndarray],
                     got_values: dict[str, np.ndarray], tol: Tolerance) -> dict | None:
    """The first tensor in topological `order` ((tensor, node name, op type) triples) present on both
    sides whose values differ beyond tolerance."""
    for tensor, node, op_type in order:
        r, g = ref_values.get(tensor), got_values.get(tensor)
        if r is None or g is None or np.shape(r) != np.shape(g):
            continue
        c = cosine(r, g)
        m = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if np.size(r) else 0.0
        if c < tol.min_cosine and m > tol.atol:
            return {"tensor": tensor, "node": node, "op_type": op_type, "cosine": c, "max_abs": m}
    return None
