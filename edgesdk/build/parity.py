"""Parity on the build machine: feeds from real images through the target's preprocessing, the
converted artifact against onnxruntime on the reference ONNX, and the bisection that finds where
they part. Runs the device's sessions (build may use device)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, ConvertOptions, TensorInfo
from edgesdk.build.calibration import image_files, input_spec
from edgesdk.device.compare import ParityReport, Tolerance, check_parity
from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference, read_image
from edgesdk.errors import BackendUnavailable, EdgeSDKError

REFERENCE_FILE = "reference.onnx"  # the optimized ONNX the artifact was built from
PARITY_FILE = "parity.json"


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
            s = input_spec(t, shape, spec)  # the caller's normalisation; size, layout, dtype of the input
            if s is not None:
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


def locate_divergence(reference_onnx: Path, backend, options: ConvertOptions, feeds: dict,
                      tol: Tolerance, max_probes: int = 10) -> dict | None:
    """Bisect the topological order: cut the model at a tensor, convert the cut model with the same
    backend, compare that tensor with onnxruntime's. Works for any backend that converts ONNX."""
    import onnx

    from edgesdk.backends.onnxruntime.session import reference_session
    from edgesdk.build.model import infer_shapes
    from edgesdk.device.compare import cosine

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


def validate_artifact(path: str | Path, images: str | Path | None = None, samples: int = 8,
                      threads: int | None = None) -> ParityReport:
    """Re-check a converted directory against the reference ONNX it was built from, or a bundle
    (which carries no ONNX) by replaying its golden samples: reference outputs on real images."""
    from edgesdk.backends.onnxruntime.session import reference_session
    from edgesdk.device.bundle import MANIFEST, is_archive

    path = Path(path)
    if (path / MANIFEST).is_file() or is_archive(path):
        if images:
            raise EdgeSDKError(f"{path}: a bundle carries no reference model to run new images through; "
                               "--images needs the directory `edgesdk convert` wrote")
        from edgesdk.device.runtime import load

        with load(path, threads=threads) as model:
            report = model.check()
        report.notes.append("bundle: its golden samples replayed against their reference outputs")
        return report
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
