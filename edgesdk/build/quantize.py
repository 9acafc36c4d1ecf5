"""Precision policy and the int8 accuracy budget. Build side.

Every backend quantizes the same way: calibration feeds (edgesdk.calibration) and the ONNX node names
to keep in float travel in ConvertOptions to the backend's own quantizer (NNCF for OpenVINO,
onnxruntime's QDQ quantizer for onnxruntime and TensorRT, ours for ncnn). `quantize_stage` then
checks the result against fp32 onnxruntime on held-back images (never the calibration ones) and,
while a profile's budget ([quantize] max_top1_drop / min_cosine) is missed, keeps the most
sensitive layers in float one at a time.

Sensitivity (`layer_sensitivity`): the model is quantized once with onnxruntime's QDQ quantizer
(min/max ranges) and, for each quantized node, a copy of the float model gets that node's input and
weight quantize/dequantize pairs alone; the node's score is the mean output error (1 - cosine)
this one node causes on a few held-back samples, run on onnxruntime. That is one float-model run
per node on the simulator, not one engine quantization per node. We first tried the cheaper proxy
of comparing every intermediate tensor of the float and QDQ runs and charging each node the rise
of error across it: on EfficientNet-Lite0 it ranked the projection convolutions first, yet keeping
twelve of them float in OpenVINO changed neither cosine nor top-1, while the node-alone measure
finds the first depthwise convolution, whose int8 weights alone cost ten times any other layer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgesdk.backends.base import Artifact, ConvertOptions, TensorInfo
from edgesdk.build.budget import Budget, BudgetCheck, _better, check_budget, has_classifier_output
from edgesdk.build.calibration import (DEFAULT_CALIB_IMAGES, calibration_feeds, list_images, select_images,
                                      split_for_calibration)
from edgesdk.build.sensitivity import layer_sensitivity
from edgesdk.errors import BackendUnavailable, EdgeSDKError, ParityError

METHODS = ("kl", "minmax", "aciq")
DEFAULT_MAX_FALLBACK = 12  # layers kept in float before the budget is declared unreachable
SENSITIVITY_SAMPLES = 6
# With fewer held-back photos than this, a fifth says little (one flip in 21 reads as a 5 % drop): the
# budget is judged on every photo by two-fold cross-checking (calibrate on one half, check the other).
FOLDS_BELOW = 100
# A profile without [quantize] gets the shipped int8 profiles' budget; a model without a classifier
# output is judged by cosine instead of top-1.
DEFAULT_QUANTIZE = {"calib_images": DEFAULT_CALIB_IMAGES, "max_top1_drop": 0.01, "float_layers": ["stem", "depthwise"]}
DEFAULT_MIN_COSINE = 0.99


# ---------------------------------------------------------------------------- policy

# Layer classes a profile may keep in float from the start ([quantize] float_layers), besides node names.
# Per-tensor int8 activations cannot hold a depthwise convolution's input, whose channels' ranges differ
# by orders of magnitude, nor the stem's few-channel image input; both have few weights, so float costs
# little size. On EfficientNet-Lite0 int8 with these in float agrees with fp32 as well as bf16
# arithmetic does (benchmarks/bench_int8_agreement.py).
FLOAT_LAYER_CLASSES = {
    "stem": "the first convolution (in graph order), which reads the input image",
    "depthwise": "every depthwise convolution (Conv with group = input channels > 1)",
}


@dataclass(frozen=True)
class QuantizeSettings:
    calib_images: int = DEFAULT_CALIB_IMAGES
    method: str = "kl"
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    max_fallback: int = DEFAULT_MAX_FALLBACK
    float_layers: tuple[str, ...] = ()  # FLOAT_LAYER_CLASSES keys or ONNX node names, kept float from the start
    is_default: bool = False  # DEFAULT_QUANTIZE for a profile without [quantize]
    method_given: bool = False  # the profile names the method: no other is tried

    @classmethod
    def shipped_default(cls) -> "QuantizeSettings":
        return replace(cls.from_profile(DEFAULT_QUANTIZE, "the default [quantize]"), is_default=True)

    @classmethod
    def from_profile(cls, table: dict | None, source: str = "[quantize]") -> "QuantizeSettings":
        """A target profile's [quantize] table (keys already checked by the profile loader)."""
        t = dict(table or {})

        def number(key, lo, hi):
            v = t.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise EdgeSDKError(f"{source} {key} must be a number in [{lo}, {hi}], got {v!r}")
            return float(v)

        n = t.get("calib_images", DEFAULT_CALIB_IMAGES)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise EdgeSDKError(f"{source} calib_images must be a positive integer, got {n!r}")
        method = t.get("method", "kl")
        if method not in METHODS:
            raise EdgeSDKError(f"{source} method must be one of {', '.join(METHODS)}, got {method!r}")
        seed = t.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise EdgeSDKError(f"{source} seed must be an integer, got {seed!r}")
        float_layers = t.get("float_layers", [])
        if not isinstance(float_layers, list) or not all(isinstance(n, str) and n for n in float_layers):
            raise EdgeSDKError(f"{source} float_layers must be a list of layer classes "
                               f"({', '.join(FLOAT_LAYER_CLASSES)}) or ONNX node names, got {float_layers!r}")
        margin = number("top1_margin", 0.0, 1.0)
        budget = Budget(number("max_top1_drop", 0.0, 1.0), number("min_cosine", -1.0, 1.0),
                        *(() if margin is None else (margin,)))
        return cls(n, method, seed, budget, float_layers=tuple(float_layers), method_given="method" in t)


def resolve_float_layers(proto, entries, source) -> list[str]:
    """ONNX node names for a profile's float_layers: a class name stands for its nodes (none is fine: a
    model without depthwise convolutions has nothing to keep); any other entry must name a node."""
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]  # ONNX keeps nodes in topological order
    nodes = {n.name for n in proto.graph.node}
    weights = {i.name: i for i in proto.graph.initializer}
    found: list[str] = []
    for entry in entries:
        if entry == "stem":
            names = [n.name for n in convs[:1]]
        elif entry == "depthwise":
            names = [n.name for n in convs if _is_depthwise(n, weights)]
        elif entry in nodes:
            names = [entry]
        else:
            raise EdgeSDKError(f"{source}: [quantize] float_layers entry {entry!r} is neither a layer class "
                               f"({', '.join(FLOAT_LAYER_CLASSES)}) nor an ONNX node of the model")
        found.extend(n for n in names if n not in found)
    return found


def _is_depthwise(conv, weights: dict) -> bool:
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    weight = weights.get(conv.input[1]) if len(conv.input) > 1 else None
    # weight [out, in/group, kh, kw]: one input channel per group
    return group > 1 and weight is not None and len(weight.dims) >= 2 and weight.dims[1] == 1


# ---------------------------------------------------------------------------- the quantize stage

@dataclass
class QuantizeReport:
    method: str
    calibration_images: int
    held_back_images: int
    budget: Budget
    float_layers: list[str] = field(default_factory=list)  # the profile's float_layers, as ONNX node names
    steps: list[dict] = field(default_factory=list)  # one per quantization: float nodes and the check
    fallback: list[str] = field(default_factory=list)  # nodes kept in float, in the order added
    latency_ms: dict[str, float] | None = None  # {"int8": plain int8, "final": with the fallback}
    checked_on: str | None = None  # the engine that ran the held-back check
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "method": self.method, "calibration_images": self.calibration_images,
            "held_back_images": self.held_back_images, "float_layers": list(self.float_layers),
            "budget": {"max_top1_drop": self.budget.max_top1_drop, "min_cosine": self.budget.min_cosine,
                       "top1_margin": self.budget.margin},
            "steps": self.steps, "fallback": list(self.fallback), "latency_ms": self.latency_ms,
            "checked_on": self.checked_on, "sensitivity": [[n, s] for n, s in self.sensitivity[:20]],
            "notes": list(self.notes),
        }

    @property
    def held(self) -> bool:
        """A budget was given, checked here, and the final artifact holds it."""
        return bool(self.budget) and bool(self.steps) and self.steps[-1]["check"]["passed"]

    def summary(self) -> str:
        lines = [f"int8 ({self.method}) calibrated on {self.calibration_images} images, checked on "
                 f"{self.held_back_images} images on {self.checked_on or '-'}; budget: {self.budget.describe()}"]
        if self.float_layers:
            lines.append(f"  float by the profile: {len(self.float_layers)} layer(s)")
        for s in self.steps:
            lines.append(f"  {s.get('method', self.method)}, {len(s['float_nodes']):2d} float layer(s): "
                         f"{BudgetCheck(**s['check']).describe()} "
                         f"{'ok' if s['check']['passed'] else 'missed'}")
        if self.fallback:
            lines.append(f"  kept in float: {', '.join(self.fallback)}")
        if self.latency_ms:
            lines.append(f"  latency: int8 {self.latency_ms['int8']:.2f} ms -> with fallback "
                         f"{self.latency_ms['final']:.2f} ms")
        lines.extend(f"  {n}" for n in self.notes)
        return "\n".join(lines)


def _checker(be, artifact: Artifact, threads: int | None):
    """A session that runs the artifact here and what it is, or (None, why not). A TensorRT int8
    artifact's QDQ ONNX runs on onnxruntime: the same quantized graph TensorRT will build from."""
    from edgesdk.backends.onnxruntime.session import OnnxRuntimeSession

    reason = be.available()
    if reason is None:
        try:
            session = be.open(artifact, threads=threads)
            # a simulator (rknn's, for the NPU) names itself: its timings say nothing of the device's
            return session, getattr(session, "engine_label", be.name)
        except BackendUnavailable as e:
            reason = str(e)
    qdq = artifact.meta.get("qdq_onnx")
    if qdq:
        return OnnxRuntimeSession(artifact.path(qdq), threads=threads), "onnxruntime (the artifact's QDQ ONNX)"
    return None, reason


def _latency_ms(session, feed: dict, runs: int = 30) -> float:
    for _ in range(3):
        session.run(feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def quantize_stage(be, model: Path, out: Path, options: ConvertOptions, images, spec,
                   settings: QuantizeSettings | None = None, threads: int | None = None,
                   progress: Callable[[str], None] | None = None
                   ) -> tuple[Artifact, QuantizeReport, ConvertOptions]:
    """Calibrate, convert to int8 with `be`, check the budget on held-back images; while it is
    missed keep the next most sensitive layer in float. Raises ParityError naming the best result
    when `settings.max_fallback` layers are not enough. `out` is the backend's output directory.
    Returns the artifact, the report and the options the artifact was converted with."""
    from edgesdk.backends.onnxruntime.session import reference_session
    from edgesdk.build.model import graph_inputs, io_dicts, load_model

    settings = settings or QuantizeSettings()
    say = progress or (lambda msg: None)
    if images is None:
        raise EdgeSDKError("int8 needs calibration images: give --calib DIR (real images like the ones the "
                           "device will see)")
    proto = load_model(model)
    float_layers = resolve_float_layers(proto, settings.float_layers, model)
    items = list_images(images)
    calib_items, held = split_for_calibration(items, settings.calib_images, settings.seed)
    inputs = [TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(proto))]
    shapes = {n: r.opt for n, r in options.ranges.items()}
    shapes.update(options.shapes)
    feeds = lambda xs, **kw: calibration_feeds(xs, inputs, spec, shapes, **kw)  # noqa: E731
    folds = 2 if len(items) >= 4 and len(held) < FOLDS_BELOW else 1
    if folds == 2:  # every photo judged by an int8 model calibrated without it; the bundle's calibrates on all
        half_a, half_b = select_images(items, len(items) // 2, settings.seed)
        calib_items = select_images(items, min(settings.calib_images, len(items)), settings.seed)[0]
        say(f"calibrate {len(items)} images through the target's preprocessing; the budget is judged on all "
            f"of them by 2-fold cross-check (fewer than {FOLDS_BELOW} would be held back)")
        feeds_a, feeds_b = feeds(half_a, progress=progress is not None), feeds(half_b)
        calibration = feeds(calib_items)
        evals, plan = feeds_b + feeds_a, [(feeds_a, len(feeds_b)), (feeds_b, len(feeds_a))]
    else:
        say(f"calibrate {len(calib_items)} images through the target's preprocessing "
            f"({len(held)} held back for the accuracy check)")
        calibration = feeds(calib_items, progress=progress is not None)
        evals = feeds(held) if held else calibration
        plan = [(calibration, len(evals))]
    report = QuantizeReport(settings.method, len(calib_items), len(evals), settings.budget, float_layers=float_layers)
    if not held and folds == 1:
        report.notes.append("one image only: the budget was checked on the calibration image itself")
    exclude = list(dict.fromkeys([*options.exclude, *float_layers]))
    options = replace(options, calibration=calibration, calib_method=settings.method, exclude=exclude)

    with reference_session(model, threads=threads) as ref:
        refs = [ref.run(f) for f in evals]
    if settings.budget.max_top1_drop is not None and not has_classifier_output(refs):
        # a detector packaged with a shipped int8 profile (written with classifiers' top-1 in mind)
        cos = settings.budget.min_cosine if settings.budget.min_cosine is not None else DEFAULT_MIN_COSINE
        settings = replace(settings, budget=Budget(min_cosine=cos))
        report.budget = settings.budget
        kind, why = (("default budget", "") if settings.is_default
                     else ("budget", " (the profile's top-1 drop has nothing to count)"))
        report.notes.append(f"no classifier output: the {kind} is cosine >= {cos:g}{why}")
    if folds == 2:
        report.notes.append(f"budget judged on all {len(evals)} calibration batches by 2-fold cross-check")

    def attempt() -> tuple[Artifact, BudgetCheck | None, float | None]:
        say(f"quantize  {be.name} int8, {len(options.exclude)} layer(s) in float"
            + (", 2 folds" if folds == 2 else ""))
        gots, latency, start = [], None, 0
        for calib, n in plan:
            art = be.convert(model, out, replace(options, calibration=calib))
            for node in art.meta.get("float_nodes_lost", []):  # the engine fused it away: int8 regardless
                note = f"{node}: {be.name} fused it into an op with no counterpart of it; it stays int8"
                report.notes.extend([note] if note not in report.notes else [])
            session, where = _checker(be, art, threads)
            report.checked_on = where if session else None
            if session is None:
                return art, None, None
            with session:
                gots += [session.run(f) for f in evals[start:start + n]]
                latency = _latency_ms(session, evals[0]) if where == be.name and latency is None else latency
            start += n
        check = check_budget(refs, gots, settings.budget, folds)
        report.steps.append({"float_nodes": list(options.exclude), "method": options.calib_method,
                             "check": check.to_dict()})
        say(f"quantize  {check.describe()}: {'within' if check.passed else 'outside'} the budget "
            f"({settings.budget.describe()})")
        return art, check, latency

    def final(art: Artifact) -> Artifact:  # the folds' models each saw half: the bundle's calibrates on all
        return be.convert(model, out, options) if folds == 2 else art

    artifact, check, first_latency = attempt()
    if check is None:
        report.notes.append("budget not checked here: the engine does not run on this machine")
        return final(artifact), report, options
    if check.passed or not settings.budget:
        return final(artifact), report, options
    if not settings.method_given and options.calib_method != "minmax":
        # KL's histogram wants many photos: on 9 text lines it clipped PP-OCRv4 rec's activations in ncnn
        # (24 of 347 decided time steps flipped) where min/max ranges flipped 4. Tried before any layer goes float.
        kept = options
        options = replace(options, calib_method="minmax")
        trial, trial_check, trial_latency = attempt()
        if trial_check.passed:
            report.method = options.calib_method
            return final(trial), report, options
        if _better(trial_check, check):
            report.method, artifact, check, first_latency = options.calib_method, trial, trial_check, trial_latency
        else:
            options = kept

    say(f"quantize  ranking layers by sensitivity on {min(len(evals), SENSITIVITY_SAMPLES)} held-back images")
    rank = getattr(be, "rank_layers", None)
    if rank is not None:  # the engine's own per-layer errors of the model it just built (rknn: accuracy_analysis)
        ranked = rank(model, artifact, evals[:SENSITIVITY_SAMPLES])
        report.sensitivity = [s for s in ranked if s[0] not in options.exclude]
    else:
        quantized = getattr(be, "quantized_nodes", None)  # what the engine quantized: nothing else is worth a step
        only = quantized(model, artifact) if quantized is not None else None
        report.sensitivity = layer_sensitivity(model, calibration, evals[:SENSITIVITY_SAMPLES], options.exclude, only)
    best = (check, list(options.exclude))
    for node, _ in report.sensitivity[:settings.max_fallback]:
        options.exclude.append(node)
        report.fallback.append(node)
        artifact, check, latency = attempt()
        if _better(check, best[0]):
            best = (check, list(options.exclude))
        if check.passed:
            if first_latency is not None and latency is not None:
                report.latency_ms = {"int8": round(first_latency, 3), "final": round(latency, 3)}
            return final(artifact), report, options
    b, layers = best
    raise ParityError(
        f"int8 misses the accuracy budget ({settings.budget.describe()}) even with {len(report.fallback)} layer(s) "
        f"kept in float: best reached {b.describe()} with {len(layers)} float layer(s)"
        + (f" ({', '.join(layers)})" if layers else "")
        + "; loosen [quantize] in the target profile, give more varied calibration images, or use fp16")



__all__ = ["Budget", "QuantizeSettings", "FLOAT_LAYER_CLASSES", "resolve_float_layers", "BudgetCheck",
           "QuantizeReport", "check_budget", "layer_sensitivity", "quantize_stage", "METHODS"]
