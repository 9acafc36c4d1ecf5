"""The build pipeline — the only place its order is written.

    inspect (compat) -> optimize -> convert (Backend.convert) -> validate (vs onnxruntime) -> write

`convert()` stops at a validated artifact directory; packaging a bundle adds the bundle stage.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .backends import registry
from .backends.base import Artifact, ConvertOptions, ShapeRange, TensorInfo
from .errors import BackendUnavailable, EdgeSDKError, ParityError, UnsupportedOpError
from .preprocess import PreprocessSpec, preprocess_reference, read_image
from .validate import ParityReport, Tolerance, check_parity, tolerance_for

REFERENCE_FILE = "reference.onnx"  # the optimized ONNX the artifact was built from
PARITY_FILE = "parity.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class ConvertResult:
    artifact: Artifact
    parity: ParityReport
    nodes_before: int
    nodes_after: int
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "out": str(self.artifact.root),
            "backend": self.artifact.backend,
            "precision": self.artifact.precision,
            "files": list(self.artifact.files),
            "inputs": [t.to_dict() for t in self.artifact.inputs],
            "outputs": [t.to_dict() for t in self.artifact.outputs],
            "nodes": {"before": self.nodes_before, "after": self.nodes_after},
            "seconds": self.seconds,
            **self.parity.to_dict(),
        }


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


# ---------------------------------------------------------------------------- parity inputs

def image_files(folder: str | Path) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise EdgeSDKError(f"{d}: no such image folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgeSDKError(f"{d}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _image_layout(t: TensorInfo) -> str | None:
    """'nchw' / 'nhwc' for a float 4-D input with 3 channels, else None."""
    if len(t.shape) != 4 or not t.dtype.startswith("float"):
        return None
    if t.shape[1] == 3:
        return "nchw"
    if t.shape[3] == 3:
        return "nhwc"
    return None


def default_spec(t: TensorInfo, shape: tuple[int, ...]) -> PreprocessSpec:
    """ImageNet normalisation, stretched to the input's size: the common classifier convention."""
    layout = _image_layout(t) or "nchw"
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    return PreprocessSpec(size=(w, h), resize="stretch", color="rgb", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          layout=layout, dtype=t.dtype if t.dtype in ("float32", "float16") else "float32")


def make_feeds(inputs: list[TensorInfo], shapes: dict[str, tuple[int, ...]], images: list[Path] | None,
               spec: PreprocessSpec | None, count: int, seed: int = 0) -> tuple[list[dict], list[str]]:
    """`count` feed dicts: image-like inputs from real images through the preprocessing spec,
    other inputs from a seeded generator. Returns (feeds, notes)."""
    rng = np.random.default_rng(seed)
    notes = []
    concrete = {}
    for t in inputs:
        shape = shapes.get(t.name) or (t.shape if t.is_static else None)
        if shape is None:
            raise EdgeSDKError(f"input {t.name!r} has dynamic dims {list(t.shape)}: give a shape for validation, "
                               f"e.g. --shape {t.name}=1x3x224x224")
        concrete[t.name] = tuple(int(d) for d in shape)
    if images is None:
        notes.append("no images given: parity measured on seeded random frames")
    feeds = []
    for k in range(count):
        feed = {}
        for t in inputs:
            shape = concrete[t.name]
            if _image_layout(t):
                base = default_spec(t, shape)
                # The caller's normalisation and resize mode; size, layout and dtype follow the input.
                s = base if spec is None else PreprocessSpec(
                    **{**spec.to_dict(), "size": base.size, "layout": base.layout, "dtype": base.dtype})
                frame = (read_image(images[k % len(images)]) if images
                         else rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
                feed[t.name] = np.repeat(preprocess_reference(frame, s), shape[0], axis=0)
            elif t.dtype.startswith("float"):
                # Small float inputs are usually parameters (scales, thresholds): 1 is always a valid value.
                n = int(np.prod(shape))
                feed[t.name] = (np.ones(shape) if n <= 16 else rng.standard_normal(shape)).astype(t.dtype)
            else:
                feed[t.name] = np.ones(shape, dtype=t.dtype)
        feeds.append(feed)
    return feeds, notes


# ---------------------------------------------------------------------------- divergence

def locate_divergence(reference_onnx: Path, backend, options: ConvertOptions, feeds: dict,
                      tol: Tolerance, max_probes: int = 10) -> dict | None:
    """Bisect the topological order: cut the model at a tensor, convert the cut model with the same
    backend, compare that tensor with onnxruntime's. Works for any backend that converts ONNX."""
    import onnx

    from .backends.onnxruntime import reference_session
    from .model import infer_shapes
    from .validate import cosine

    model = infer_shapes(onnx.load(str(reference_onnx)))
    typed = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    order = [(o, n.name or n.op_type, n.op_type) for n in model.graph.node for o in n.output
             if o in typed and typed[o].type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    if not order:
        return None

    def probe(i: int) -> dict | None:
        tensor, node, op_type = order[i]
        cut = onnx.ModelProto()
        cut.CopyFrom(model)
        del cut.graph.output[:]
        cut.graph.output.append(typed[tensor])
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "cut.onnx"
            onnx.save(cut, str(path))
            try:
                art = backend.convert(path, Path(work) / "art", options)
                with backend.open(art) as s, reference_session(path) as r:
                    got, want = s.run(feeds)[tensor], r.run(feeds)[tensor]
            except EdgeSDKError:
                return None
        c = cosine(want, got)
        m = float(np.max(np.abs(want.astype(np.float64) - got))) if want.size else 0.0
        return {"tensor": tensor, "node": node, "op_type": op_type, "cosine": c, "max_abs": m,
                "diverged": c < tol.min_cosine and m > tol.atol}

    lo, hi, found, probes = 0, len(order) - 1, None, 0
    while lo <= hi and probes < max_probes:
        mid = (lo + hi) // 2
        r = probe(mid)
        probes += 1
        if r is None:  # this cut does not convert; look earlier
            hi = mid - 1
        elif r["diverged"]:
            found, hi = r, mid - 1
        else:
            lo = mid + 1
    if found:
        found.pop("diverged")
    return found


# ---------------------------------------------------------------------------- the pipeline

def convert(model: str | Path, backend: str, out: str | Path, precision: str = "fp32",
            shapes: dict[str, tuple[int, ...]] | None = None, ranges: dict[str, ShapeRange] | None = None,
            images: str | Path | list | None = None, spec: PreprocessSpec | None = None,
            engine_options: dict | None = None, samples: int = 8, tolerance: Tolerance | None = None,
            threads: int | None = None, gate: bool = True,
            progress: Callable[[str], None] | None = None) -> ConvertResult:
    """ONNX -> a validated artifact directory for one backend. With `gate`, a parity failure raises
    ParityError and leaves nothing at `out`."""
    from .compat import check_compat
    from .model import infer_shapes, load_model
    from .optimize import optimize, staged_dir

    model, out = Path(model), Path(out)
    shapes, ranges = dict(shapes or {}), dict(ranges or {})
    be = registry.get(backend)
    if precision not in be.precisions:
        raise EdgeSDKError(f"backend {backend!r} takes precision {', '.join(be.precisions)}; got {precision!r}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    _say(progress, f"inspect   {model}")
    proto = load_model(model)
    report = check_compat(infer_shapes(proto, source=model), model_path=model, shapes=shapes, probe=False)
    entry = report.get(backend)
    if entry is not None and not entry.supported and entry.unsupported:
        raise UnsupportedOpError(backend, entry.unsupported, "; ".join(entry.notes[:2]))
    image_list = image_files(images) if isinstance(images, (str, Path)) else images
    seconds["inspect"] = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="edgesdk-") as work, staged_dir(out) as stage:
        t = time.perf_counter()
        _say(progress, "optimize  shape inference, constant folding, fixed shapes")
        opt = optimize(model, Path(work) / REFERENCE_FILE, shapes=shapes)
        seconds["optimize"] = time.perf_counter() - t

        t = time.perf_counter()
        _say(progress, f"convert   {backend} {precision}")
        options = ConvertOptions(precision=precision, shapes=shapes, ranges=ranges, engine=dict(engine_options or {}))
        artifact = be.convert(opt.path, stage, options)
        seconds["convert"] = time.perf_counter() - t

        t = time.perf_counter()
        unavailable = be.available()
        if unavailable:
            raise BackendUnavailable(f"cannot validate the {backend} artifact here: {unavailable}")
        _say(progress, f"validate  {samples} samples against onnxruntime")
        from .backends.onnxruntime import reference_session

        size_of = {n: r.opt for n, r in ranges.items()}
        size_of.update(shapes)
        feeds, notes = make_feeds(artifact.inputs, size_of, image_list, spec, samples)
        tol = tolerance or tolerance_for(precision)
        with reference_session(model, threads=threads) as ref, be.open(artifact, threads=threads) as sess:
            parity = check_parity(ref, sess, feeds, precision, tol)
        parity.notes.extend(notes)
        if not parity.passed:
            _say(progress, "validate  failed: locating the first diverging layer")
            parity.divergence = locate_divergence(opt.path, be, options, feeds[0], tol)
        seconds["validate"] = time.perf_counter() - t
        if gate and not parity.passed:
            raise ParityError(f"{backend} {precision} does not match onnxruntime:\n{parity.summary()}")

        shutil.copyfile(opt.path, stage / REFERENCE_FILE)
        (stage / PARITY_FILE).write_text(json.dumps(parity.to_dict(), indent=2))
    artifact.root = out
    seconds["total"] = time.perf_counter() - t0
    return ConvertResult(artifact, parity, opt.nodes_before, opt.nodes_after, seconds)


def stderr_progress(msg: str) -> None:
    print(f"edgesdk: {msg}", file=sys.stderr, flush=True)


def validate_artifact(path: str | Path, images: str | Path | None = None, samples: int = 8,
                      threads: int | None = None) -> ParityReport:
    """Re-check a converted directory against the reference ONNX it was built from."""
    from .backends.onnxruntime import reference_session

    path = Path(path)
    artifact = Artifact.load(path)
    reference = path / REFERENCE_FILE
    if not reference.is_file():
        raise EdgeSDKError(f"{path}: has no {REFERENCE_FILE} to validate against")
    be = registry.get(artifact.backend)
    unavailable = be.available()
    if unavailable:
        raise BackendUnavailable(f"cannot run the {artifact.backend} artifact here: {unavailable}")
    shapes = {t.name: tuple(t.shape) for t in artifact.inputs if t.is_static}
    feeds, notes = make_feeds(artifact.inputs, shapes, image_files(images) if images else None, None, samples)
    with reference_session(reference, threads=threads) as ref, be.open(artifact, threads=threads) as sess:
        report = check_parity(ref, sess, feeds, artifact.precision)
    report.notes.extend(notes)
    return report
