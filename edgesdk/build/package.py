"""The build pipeline — the only place its order is written.

    inspect (compat) -> optimize -> [int8: calibrate -> quantize -> accuracy budget, keeping the most
    sensitive layers in float until it holds] -> convert (Backend.convert) -> validate (vs onnxruntime) -> write

`convert()` stops at a validated artifact directory; packaging a bundle adds the bundle stage.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, ConvertOptions, ShapeRange, TensorInfo
from edgesdk.errors import BackendUnavailable, EdgeSDKError, ParityError, UnsupportedOpError
from edgesdk.build.calibration import image_files
from edgesdk.build.exporters import settle_inputs
from edgesdk.build.parity import PARITY_FILE, REFERENCE_FILE, locate_divergence, make_feeds
from edgesdk.build.report import host_benchmark, report_md
from edgesdk.build.report_html import model_view, report_html
from edgesdk.device.compare import ParityReport, Tolerance, check_parity, tolerance_for
from edgesdk.device.preprocess import PreprocessSpec, read_image



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
    from edgesdk.atomic import staged_dir
    from edgesdk.build.compat import check_compat
    from edgesdk.build.model import check_input_sizes, infer_shapes, load_model
    from edgesdk.build.optimize import optimize

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
    report = check_compat(infer_shapes(proto, source=model), model_path=model, shapes=shapes, probe=False,
                          tensorrt_version=(engine_options or {}).get("tensorrt_version"))
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
        options = ConvertOptions(precision=precision, shapes=shapes, ranges=ranges, engine=dict(engine_options or {}),
                                 preprocess=spec, source=Path(model))

        def convert_from(graph: Path):
            if precision != "int8":
                return be.convert(graph, stage, options), None, options
            from edgesdk.build.quantize import QuantizeSettings, quantize_stage

            settings = quantize if isinstance(quantize, QuantizeSettings) else QuantizeSettings.from_profile(quantize)
            return quantize_stage(be, graph, stage, options, image_list, spec, settings, threads, progress)

        try:
            artifact, quant, options = convert_from(opt.path)
        except UnsupportedOpError as e:
            retry = getattr(be, "retry_on_dynamic_graph", None)
            if not (shapes and retry and retry(e)):
                raise
            _say(progress, f"convert   {e.ops} left unlowered at fixed shapes: retrying on the model slimmed "
                           "with dynamic dims, the converter fixing the shapes")
            dynamic = optimize(model, Path(work) / "dynamic.onnx")
            artifact, quant, options = convert_from(dynamic.path)
        seconds["convert"] = time.perf_counter() - t

        t = time.perf_counter()
        unavailable = be.available()
        parity = None
        if unavailable and require_engine:
            raise BackendUnavailable(f"cannot validate the {backend} artifact here: {unavailable}")
        if not unavailable:
            _say(progress, f"validate  {samples} samples against onnxruntime")
            from edgesdk.backends.onnxruntime.session import reference_session

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


# ---------------------------------------------------------------------------- package: convert + bundle

GOLDEN_SAMPLES = 3


@dataclass
class PackageResult:
    out: Path
    manifest: dict
    tar: Path | None = None

    def to_dict(self) -> dict:
        m = self.manifest
        return {"out": str(self.out), "tar": str(self.tar) if self.tar else None, "target": m["target"],
                "backend": m["backend"], "precision": m["precision"], "validation": m["validation"],
                "benchmark": m["benchmark"], "files": m["files"], "benchmark_skipped": m.get("benchmark_skipped")}


def package(model: str | Path, target: str | Path, out: str | Path, calib: str | Path | list | None = None,
            shapes: dict[str, tuple[int, ...]] | None = None, spec: PreprocessSpec | None = None,
            labels: list[str] | None = None, tar: bool = False, threads: int | None = None,
            sign: str | Path | None = None, progress: Callable[[str], None] | None = None) -> PackageResult:
    """The user's main job: model + target profile -> a verified bundle directory at `out`."""
    import onnx

    from edgesdk._version import __version__
    from edgesdk.device.bundle import MODEL_DIR, add_golden, save_golden, sha256_file, write_manifest
    from edgesdk.atomic import staged_dir
    from edgesdk.build.model import load_model
    from edgesdk.device.runtime import Model, engine_version
    from edgesdk.build.targets import TargetProfile, load_target
    from edgesdk.backends.triton.python_repo import serves_bundle

    model, out = Path(model), Path(out)
    profile = target if isinstance(target, TargetProfile) else load_target(target)
    if serves_bundle(profile.engine, profile.engine_options):
        return _package_served(model, profile, out, calib=calib, shapes=shapes, spec=spec, labels=labels, tar=tar,
                               threads=threads, sign=sign, progress=progress)
    sign_key = None
    if sign:
        from edgesdk.device.bundle import load_private_key

        sign_key = load_private_key(sign)  # a wrong key path fails now, not after the build
    _say(progress, f"target    {profile.name}: {profile.engine} {profile.precision} {profile.arch}")
    proto = load_model(model)
    settled = settle_inputs(proto, profile, {**profile.shapes, **(shapes or {})}, spec, labels, source=model)
    for line in settled.lines:
        _say(progress, f"settings  {line}")
    shapes, spec, post, labels = settled.shapes, settled.spec, settled.postprocess, settled.labels
    image_list = image_files(calib) if isinstance(calib, (str, Path)) else calib

    quantize = profile.quantize
    if profile.precision == "int8" and not quantize:
        from edgesdk.build.quantize import QuantizeSettings

        quantize = QuantizeSettings.shipped_default()
        settled.lines.append(f"int8 budget: the shipped int8 profiles' default ({quantize.budget.describe()}, float "
                             f"layers {', '.join(quantize.float_layers)}): the profile has no [quantize]")
        _say(progress, f"settings  {settled.lines[-1]}")
    tol = tolerance_for(profile.precision, profile.validate.get("min_cosine"), profile.validate.get("min_top1"))
    with staged_dir(out) as stage:
        result = convert(model, profile.engine, stage / MODEL_DIR, precision=profile.precision, shapes=shapes,
                         ranges=profile.ranges, images=image_list, spec=spec, engine_options=profile.engine_options,
                         tolerance=tol, threads=threads, require_engine=False, progress=progress,
                         quantize=quantize)
        (stage / MODEL_DIR / REFERENCE_FILE).unlink()  # the golden samples carry what the device needs
        (stage / MODEL_DIR / PARITY_FILE).unlink(missing_ok=True)  # it is in the manifest

        _say(progress, "golden    reference outputs for the device's self-check")
        from edgesdk.backends.onnxruntime.session import reference_session

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
            "settings_from": settled.lines,  # where shapes, pre/postprocessing and labels came from
        }
        write_manifest(stage, manifest)
        latencies, scatter = None, None
        if result.parity is not None:
            frames = ([read_image(p) for p in (image_list or [])[:4]] if spec else None) or None
            with Model(stage, threads=threads or profile.threads or None) as m:
                if profile.precision == "int8":  # what a device must reproduce: see Model.check
                    add_golden(stage, golden, "expected", [m.infer(f) for f in feeds])
                if m.simulator:
                    manifest["benchmark_skipped"] = (f"not timed: it runs in the {m.simulator} here, whose time "
                                                     f"says nothing of the device's; time it there (edgesdk bench)")
                    _say(progress, f"benchmark {manifest['benchmark_skipped']}")
                else:
                    _say(progress, "benchmark on this machine")
                    manifest["benchmark"] = host_benchmark(m, frames or [])
                    latencies = manifest["benchmark"].pop("latencies_ms", None)
                first_out = result.artifact.outputs[0].name
                scatter = (outputs[0][first_out], m.infer(feeds[0])[first_out], first_out)
        (stage / "report.md").write_text(report_md(manifest, latencies))
        first_in = result.artifact.inputs[0].name
        view = model_view(feeds[0][first_in], manifest["preprocess"]) if spec and image_list else None
        (stage / "report.html").write_text(report_html(manifest, latencies, view, scatter), encoding="utf-8")
        write_manifest(stage, manifest)
        if sign_key is not None:
            from edgesdk.device.bundle import sign_bundle

            sign_bundle(stage, sign_key)
        _say(progress, f"bundle    {out}")
        _say(progress, f"report    {out / 'report.html'}")
    tar_path = _write_tar(out) if tar else None
    return PackageResult(out, json.loads((out / "manifest.json").read_text()), tar_path)


def _package_served(model: Path, profile, out: Path, tar: bool, progress, **kwargs) -> PackageResult:
    """A Triton model repository whose model runs an edgesdk bundle (triton-cpu): the bundle for the engine the
    profile names, packaged as any other, then the repository around it."""
    import dataclasses

    from edgesdk.backends.triton.python_repo import python_settings, write_python_repository

    settings, rest = python_settings(profile.engine_options, profile.source or profile.name)
    inner = dataclasses.replace(profile, engine=settings["bundle_engine"], engine_options=rest)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgesdk-served-", dir=out.parent) as work:
        result = package(model, inner, Path(work) / "bundle", progress=progress, **kwargs)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", model.stem).lstrip(".-") or "model"
        write_python_repository(result.out, out, settings, name)
    _say(progress, f"triton    model repository {out} (serve it: edgesdk serve {out})")
    return PackageResult(out, result.manifest, _write_tar(out) if tar else None)


def _write_tar(bundle: Path) -> Path:
    import tarfile

    from edgesdk.atomic import staged_file

    dest = bundle.with_name(bundle.name + ".tar.gz")
    with staged_file(dest) as tmp, tarfile.open(tmp, "w:gz") as tf:
        tf.add(bundle, arcname=bundle.name)
    return dest
