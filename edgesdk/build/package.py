"""The build pipeline — the only place its order is written.

    inspect (compat) -> optimize -> [int8: calibrate -> quantize -> accuracy budget, keeping the most
    sensitive layers in float until it holds] -> convert (Backend.convert) -> validate (vs onnxruntime) -> write

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
    parity: ParityReport | None  # None when the engine cannot run on this machine (TensorRT)
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
            **(self.parity.to_dict() if self.parity else {"passed": None, "notes": [self.skipped]}),
            "quantization": self.quantization,
        }

    skipped: str = ""  # why validation did not run here
    quantization: dict | None = None  # int8: calibration, budget steps, layers kept in float (QuantizeReport)


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
            threads: int | None = None, gate: bool = True, require_engine: bool = True,
            progress: Callable[[str], None] | None = None, quantize=None) -> ConvertResult:
    """ONNX -> a validated artifact directory for one backend. With `gate`, a parity failure raises
    ParityError and leaves nothing at `out`. Without `require_engine`, an engine that cannot run
    here (TensorRT on a workstation) skips validation instead of failing: the device checks it.
    int8 calibrates on `images` and holds the accuracy budget of `quantize` (a QuantizeSettings or
    a profile's [quantize] table), or raises ParityError and writes nothing."""
    from .atomic import staged_dir
    from .compat import check_compat
    from .model import check_input_sizes, infer_shapes, load_model
    from .optimize import optimize

    model, out = Path(model), Path(out)
    shapes, ranges = dict(shapes or {}), dict(ranges or {})
    be = registry.get(backend)
    if precision not in be.precisions:
        raise EdgeSDKError(f"backend {backend!r} takes precision {', '.join(be.precisions)}; got {precision!r}")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise EdgeSDKError(f"samples (inputs compared against onnxruntime) must be an integer >= 1, got {samples!r}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    _say(progress, f"inspect   {model}")
    proto = load_model(model)
    check_input_sizes(proto, shapes, ranges, source=model)
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
        quant = None
        if precision == "int8":
            from .quantize import QuantizeSettings, quantize_stage

            settings = quantize if isinstance(quantize, QuantizeSettings) else QuantizeSettings.from_profile(quantize)
            artifact, quant, options = quantize_stage(be, opt.path, stage, options, image_list, spec, settings,
                                                      threads, progress)
        else:
            artifact = be.convert(opt.path, stage, options)
        seconds["convert"] = time.perf_counter() - t

        t = time.perf_counter()
        unavailable = be.available()
        parity = None
        if unavailable and require_engine:
            raise BackendUnavailable(f"cannot validate the {backend} artifact here: {unavailable}")
        if not unavailable:
            _say(progress, f"validate  {samples} samples against onnxruntime")
            from .backends.onnxruntime import reference_session

            size_of = {n: r.opt for n, r in ranges.items()}
            size_of.update(shapes)
            feeds, notes = make_feeds(artifact.inputs, size_of, image_list, spec, samples)
            tol = tolerance or tolerance_for(precision)
            try:
                session = be.open(artifact, threads=threads)
            except BackendUnavailable as e:  # e.g. an OpenVINO GPU profile on a machine without that GPU
                if require_engine:
                    raise
                unavailable = str(e)
        if unavailable:
            _say(progress, f"validate  skipped: {unavailable}")
        else:
            with reference_session(model, threads=threads) as ref, session:
                parity = check_parity(ref, session, feeds, precision, tol)
            parity.notes.extend(notes)
            if not parity.passed and precision != "int8":  # int8 error builds up everywhere: see quantization
                _say(progress, "validate  failed: locating the first diverging layer")
                parity.divergence = locate_divergence(opt.path, be, options, feeds[0], tol)
            held = quant is not None and quant.held
            if held and not parity.passed:
                parity.notes.append("int8: gated by the accuracy budget on held-back images, which it holds "
                                    f"({quant.budget.describe()}); per-sample cosine is informational")
            if gate and not parity.passed and not held:
                raise ParityError(f"{backend} {precision} does not match onnxruntime:\n{parity.summary()}")
            (stage / PARITY_FILE).write_text(json.dumps(parity.to_dict(), indent=2))
        seconds["validate"] = time.perf_counter() - t
        shutil.copyfile(opt.path, stage / REFERENCE_FILE)
    artifact.root = out
    seconds["total"] = time.perf_counter() - t0
    skipped = "" if parity else f"not validated here: {unavailable}"
    return ConvertResult(artifact, parity, opt.nodes_before, opt.nodes_after, seconds, skipped,
                         quant.to_dict() if quant else None)


def stderr_progress(msg: str) -> None:
    print(f"edgesdk: {msg}", file=sys.stderr, flush=True)


def validate_artifact(path: str | Path, images: str | Path | None = None, samples: int = 8,
                      threads: int | None = None) -> ParityReport:
    """Re-check a converted directory against the reference ONNX it was built from, or a bundle
    (which carries no ONNX) by replaying its golden samples: reference outputs on real images."""
    from .backends.onnxruntime import reference_session
    from .bundle import MANIFEST, is_archive

    path = Path(path)
    if (path / MANIFEST).is_file() or is_archive(path):
        if images:
            raise EdgeSDKError(f"{path}: a bundle carries no reference model to run new images through; "
                               "--images needs the directory `edgesdk convert` wrote")
        from .runtime import load

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


# ---------------------------------------------------------------------------- package: convert + bundle

GOLDEN_SAMPLES = 3
META_PREPROCESS, META_POSTPROCESS, META_LABELS = "edgesdk.preprocess", "edgesdk.postprocess", "edgesdk.labels"


@dataclass
class PackageResult:
    out: Path
    manifest: dict
    tar: Path | None = None

    def to_dict(self) -> dict:
        m = self.manifest
        return {"out": str(self.out), "tar": str(self.tar) if self.tar else None, "target": m["target"],
                "backend": m["backend"], "precision": m["precision"], "validation": m["validation"],
                "benchmark": m["benchmark"], "files": m["files"]}


def model_metadata(proto) -> dict:
    """Pre/post-processing and labels a model carries in its metadata_props (JSON values)."""
    meta = {}
    for p in proto.metadata_props:
        if p.key in (META_PREPROCESS, META_POSTPROCESS, META_LABELS):
            try:
                meta[p.key] = json.loads(p.value)
            except ValueError:
                raise EdgeSDKError(f"model metadata {p.key!r} is not valid JSON") from None
    return meta


def _host_benchmark(model, frames: list[np.ndarray], iters: int = 30) -> dict:
    from .bench import benchmark

    return benchmark(model, frames, iters=iters, warmup=5)


def _report_md(manifest: dict, latencies: list[float] | None) -> str:
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
            lines += ["| layers in float | top-1 drop | fp32 gaps of the flips | cosine min | budget |",
                      "|---|---|---|---|---|"]
            for st in q["steps"]:
                c = st["check"]
                drop = "-" if c["top1_drop"] is None else f"{c['top1_drop']:.3f}"
                gaps = ", ".join(f"{g:.3g}" for g in c.get("flip_gaps", [])) or "-"
                lines.append(f"| {len(st['float_nodes'])} | {drop} | {gaps} | {c['cosine_min']:.4f} | "
                             f"{'held' if c['passed'] else 'missed'} |")
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
            lines += ["```", *_histogram(latencies), "```"]
    else:
        lines.append("The engine does not run on the build machine.")
    return "\n".join(lines) + "\n"


def _histogram(values: list[float], bins: int = 10, width: int = 40) -> list[str]:
    """A text latency plot: milliseconds per bin and a bar per count."""
    lo, hi = min(values), max(values)
    step = (hi - lo) / bins or 1e-9
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    top = max(counts)
    return [f"{lo + i * step:8.2f} ms | {'#' * max(1 if c else 0, round(width * c / top))} {c}" for i, c in enumerate(counts)]


def package(model: str | Path, target: str | Path, out: str | Path, calib: str | Path | list | None = None,
            shapes: dict[str, tuple[int, ...]] | None = None, spec: PreprocessSpec | None = None,
            labels: list[str] | None = None, tar: bool = False, threads: int | None = None,
            sign: str | Path | None = None, progress: Callable[[str], None] | None = None) -> PackageResult:
    """The user's main job: model + target profile -> a verified bundle directory at `out`."""
    import onnx

    from . import __version__
    from .bundle import MODEL_DIR, add_golden, save_golden, sha256_file, write_manifest
    from .atomic import staged_dir
    from .model import check_input_sizes, load_model
    from .runtime import Model, engine_version
    from .targets import load_target

    model, out = Path(model), Path(out)
    profile = load_target(target)
    sign_key = None
    if sign:
        from .bundle import load_private_key

        sign_key = load_private_key(sign)  # a wrong key path fails now, not after the build
    _say(progress, f"target    {profile.name}: {profile.engine} {profile.precision} {profile.arch}")
    proto = load_model(model)
    meta = model_metadata(proto)
    shapes = {**profile.shapes, **(shapes or {})}
    check_input_sizes(proto, shapes, profile.ranges, source=model)  # before the spec is sized from the inputs
    image_list = image_files(calib) if isinstance(calib, (str, Path)) else calib

    # preprocessing: explicit argument > profile > the model's own metadata > ImageNet default
    from .model import graph_inputs, io_dicts

    first = TensorInfo.from_dict(io_dicts(graph_inputs(proto))[0])
    first_shape = shapes.get(first.name) or (profile.ranges[first.name].opt if first.name in profile.ranges
                                             else first.shape)
    image_model = _image_layout(first) is not None and all(isinstance(d, int) for d in first_shape)
    if spec is None:
        spec = profile.preprocess or (PreprocessSpec.from_dict(meta[META_PREPROCESS]) if META_PREPROCESS in meta
                                      else None)
    if image_model:
        base = default_spec(first, tuple(first_shape))
        spec = base if spec is None else PreprocessSpec(
            **{**spec.to_dict(), "size": base.size, "layout": base.layout, "dtype": base.dtype})
    else:
        spec = None
    post = dict(profile.postprocess)
    if post.get("kind", "none") == "none" and META_POSTPROCESS in meta:
        post = dict(meta[META_POSTPROCESS])
    labels = labels if labels is not None else meta.get(META_LABELS)
    from .postprocess import get as get_post

    get_post(post.get("kind", "none"), {k: v for k, v in post.items() if k != "kind"}, labels=labels)  # fail early

    tol = tolerance_for(profile.precision, profile.validate.get("min_cosine"), profile.validate.get("min_top1"))
    with staged_dir(out) as stage:
        result = convert(model, profile.engine, stage / MODEL_DIR, precision=profile.precision, shapes=shapes,
                         ranges=profile.ranges, images=image_list, spec=spec, engine_options=profile.engine_options,
                         tolerance=tol, threads=threads, require_engine=False, progress=progress,
                         quantize=profile.quantize)
        (stage / MODEL_DIR / REFERENCE_FILE).unlink()  # the golden samples carry what the device needs
        (stage / MODEL_DIR / PARITY_FILE).unlink(missing_ok=True)  # it is in the manifest

        _say(progress, "golden    reference outputs for the device's self-check")
        from .backends.onnxruntime import reference_session

        size_of = {n: r.opt for n, r in profile.ranges.items()}
        size_of.update(shapes)
        feeds, _ = make_feeds(result.artifact.inputs, size_of, image_list, spec, GOLDEN_SAMPLES, seed=1)
        with reference_session(model) as ref:
            outputs = [ref.run(f) for f in feeds]
        golden = save_golden(stage, feeds, outputs)
        if labels:
            (stage / "labels.txt").write_text("\n".join(labels) + "\n")

        validation = result.parity.to_dict() if result.parity else {
            "passed": None, "notes": [result.skipped + "; Model.check() replays the golden samples there"]}
        manifest = {
            "schema": 1,
            "target": profile.to_dict(),
            "backend": profile.engine,
            "precision": profile.precision,
            "threads": profile.threads or None,
            "inputs": [t.to_dict() for t in result.artifact.inputs],
            "outputs": [t.to_dict() for t in result.artifact.outputs],
            "preprocess": spec.to_dict() if spec else None,
            "postprocess": post,
            "labels": "labels.txt" if labels else None,
            "versions": {"edgesdk": __version__, "onnx": onnx.__version__,
                         profile.engine: engine_version(profile.engine) or result.artifact.meta.get(profile.engine)},
            "validation": validation,
            "benchmark": None,
            "golden": golden,
            "source": {"model": model.name, "sha256": sha256_file(model), "nodes": result.nodes_before,
                       "nodes_optimized": result.nodes_after},
            "build_seconds": {k: round(v, 3) for k, v in result.seconds.items()},
            "quantization": result.quantization,
        }
        write_manifest(stage, manifest)
        latencies = None
        if result.parity is not None:
            _say(progress, "benchmark on this machine")
            frames = ([read_image(p) for p in (image_list or [])[:4]] if spec else None) or None
            with Model(stage, threads=threads or profile.threads or None) as m:
                if profile.precision == "int8":  # what a device must reproduce: see Model.check
                    add_golden(stage, golden, "expected", [m.infer(f) for f in feeds])
                manifest["benchmark"] = _host_benchmark(m, frames or [])
            latencies = manifest["benchmark"].pop("latencies_ms", None)
        (stage / "report.md").write_text(_report_md(manifest, latencies))
        write_manifest(stage, manifest)
        if sign_key is not None:
            from .bundle import sign_bundle

            sign_bundle(stage, sign_key)
        _say(progress, f"bundle    {out}")
    tar_path = _write_tar(out) if tar else None
    return PackageResult(out, json.loads((out / "manifest.json").read_text()), tar_path)


def _write_tar(bundle: Path) -> Path:
    import tarfile

    from .atomic import staged_file

    dest = bundle.with_name(bundle.name + ".tar.gz")
    with staged_file(dest) as tmp, tarfile.open(tmp, "w:gz") as tf:
        tf.add(bundle, arcname=bundle.name)
    return dest
