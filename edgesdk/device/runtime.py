"""On-device Model: load a bundle, verify it, run frames through preprocess -> engine -> postprocess.

Device side: imports numpy, the bundle reader, and the one engine the bundle names — never the
build side. ncnn and OpenVINO bundles run on the engines built into edgesdk._native when it has
them (NativeSession: no GIL, no copies), else on the engines' Python packages. Thread-safety: a Model
may be called from several threads at once; the engine sessions keep per-thread state (a native
state per thread, ncnn Extractor per call, OpenVINO request per thread, ORT is thread-safe).
"""
from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import __version__
from .backends import registry
from .backends.base import Artifact
from .bundle import MODEL_DIR, Manifest, is_archive, read_manifest
from .errors import BackendUnavailable, BundleError, EdgeSDKError
from .preprocess import PreprocessSpec, check_frame


def engine_version(backend: str) -> str | None:
    """The installed version of a backend's engine, or None when it is not importable."""
    import importlib

    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn", "tensorrt": "tensorrt",
              "triton": None}.get(backend)
    if module is None:
        return None
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    if backend == "openvino":
        return mod.get_version().split("-")[0]
    return getattr(mod, "__version__", None)


def _numbers(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def native_engine_version(backend: str) -> str | None:
    """The version of an engine linked into edgesdk._native, when build_info reports it (ncnn: static)."""
    native = _native_module()
    info = native.build_info() if native is not None else {}
    return info[backend].split()[0] if isinstance(info.get(backend), str) else None


def check_engine(manifest: Manifest, native: bool = False) -> None:
    """Refuse, with the reason, a bundle whose engine is missing or older than the one it was built with
    (an older engine may lack its layers or IR version: a crash deep inside the engine otherwise).
    native: the bundle runs on the engine linked into edgesdk._native, whose version is checked instead
    of the Python package's (a board with the native ncnn engine needs no ncnn Python package)."""
    backend = manifest.backend
    have = native_engine_version(backend) if native else None
    if have is None:
        reason = registry.get(backend).available()
        if reason:
            raise BackendUnavailable(f"{manifest.root}: bundle needs the {backend} engine: {reason}")
        have = engine_version(backend)
    built = (manifest["versions"] or {}).get(backend)
    if built and have and backend != "tensorrt" and _numbers(have)[:2] < _numbers(built)[:2]:
        raise BackendUnavailable(f"{manifest.root}: bundle was built for {backend} {built}; this device has {have} "
                                 f"— upgrade {backend} to {'.'.join(map(str, _numbers(built)[:2]))} or newer")


def _native_module():
    try:
        from . import _native
    except ImportError:  # a source tree without the built extension
        return None
    return _native


class NativeSession:
    """An ncnn or OpenVINO artifact run by the engine built into edgesdk._native (contract in
    native/include/edgesdk/engine.h): an immutable engine shared by all threads plus a small state per
    thread. Preprocessing and inference run without the GIL; inputs are read in place, frames are
    preprocessed straight into the engine's input memory, and outputs are arrays over the engine's
    own memory (nothing reuses it).

    Engine threads are fixed when an engine loads (ncnn sizes its gemm tiles then; OpenVINO compiles
    its streams), so every layout — threads per run x runs in parallel — has its own engine, made on
    first use: the default (the bundle's threads, one run at a time) and one per stream() width."""

    def __init__(self, artifact: Artifact, threads: int | None = None):
        native = _native_module()
        self.root = artifact.root
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        self.threads = threads
        opener = _ncnn_opener if artifact.backend == "ncnn" else _openvino_opener
        self._opener = opener(native, artifact)
        self._engines: dict[tuple[int, int], object] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.engine()  # load now: a bad artifact fails at load, not at the first frame

    @staticmethod
    def unavailable(artifact: Artifact) -> str | None:
        """Why the native engines cannot run this artifact, or None when they can."""
        native = _native_module()
        if native is None:
            return "edgesdk._native is not built"
        if artifact.backend not in native.engines():
            return f"edgesdk._native was built without {artifact.backend}"
        if artifact.backend == "ncnn":
            if artifact.precision not in ("fp32", "fp16", "int8"):
                return f"ncnn {artifact.precision} artifacts run on the Python session"
            if any(t.dtype != "float32" for t in artifact.inputs):
                return "the ncnn engine takes float32 inputs"
        elif artifact.backend == "openvino":
            from .backends.openvino import DEFAULT_INFERENCE_PRECISION

            if artifact.precision not in DEFAULT_INFERENCE_PRECISION:
                return f"OpenVINO {artifact.precision} artifacts run on the Python session"
        else:
            return f"no native engine for {artifact.backend}"
        return None

    def engine(self, threads: int | None = None, streams: int = 1):
        """The engine for a layout (threads per run, runs in parallel), loaded on first use."""
        key = (self.threads or 0, 1) if threads is None else (threads, streams)
        with self._lock:
            if self._engines is None:
                raise EdgeSDKError(f"{self.root}: session is closed")
            eng = self._engines.get(key)
            if eng is None:
                eng = self._engines[key] = self._opener(*key)
        return eng

    def _state(self, threads: int | None, streams: int):
        states = self._local.__dict__.setdefault("states", {})
        key = (threads, streams)
        st = states.get(key)
        if st is None:
            st = states[key] = self.engine(threads, streams).new_state()
        return st

    def _named(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {t.name: a if a.dtype.name == t.dtype else a.astype(t.dtype) for t, a in zip(self.outputs, arrays)}

    def run(self, feeds: dict[str, np.ndarray], threads: int | None = None, streams: int = 1) -> dict[str, np.ndarray]:
        from .backends.onnxruntime import check_feeds

        check_feeds(self.inputs, feeds, str(self.root))
        return self._named(self._state(threads, streams).run([feeds[t.name] for t in self.inputs]))

    def run_frame(self, frame: np.ndarray, spec, threads: int | None = None, streams: int = 1) -> dict[str, np.ndarray]:
        """A BGR uint8 frame through `spec` (an edgesdk._native.PreprocessSpec) into the engine's input."""
        return self._named(self._state(threads, streams).run_frame(frame, spec))

    def input_pointer(self, index: int = 0, threads: int | None = None, streams: int = 1) -> int:
        """Address this thread's state read input `index` from in its last run (tests prove zero copy)."""
        return self._state(threads, streams).input_pointer(index)

    def copies(self) -> int:
        """Bytes the engines copied on the way in or out (0 when every tensor was read in place)."""
        with self._lock:
            return sum(e.copies for e in (self._engines or {}).values())

    def close(self) -> None:
        with self._lock:
            self._engines = None
        self._local = threading.local()  # this thread's states; other threads' go with their threads


def _dims(shape) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def _ncnn_opener(native, artifact: Artifact):
    """The ncnn engine with the options the Python NcnnSession sets (so parity holds)."""
    meta = artifact.meta
    try:
        param, weights = str(artifact.path(meta["param"])), str(artifact.path(meta["bin"]))

        def blobs(infos, key):
            return [(t.name, meta[key][t.name]["blob"],
                     -1 if meta[key][t.name]["batch_axis"] is None else meta[key][t.name]["batch_axis"],
                     _dims(t.shape), t.dtype) for t in infos]

        inputs, outputs = blobs(artifact.inputs, "inputs"), blobs(artifact.outputs, "outputs")
    except (KeyError, TypeError) as e:
        raise BundleError(f"{artifact.root}: ncnn artifact metadata lacks {e} "
                          "(was it written by the ncnn backend?)") from None
    from .backends.ncnn import check_int8_weights

    check_int8_weights(artifact, Path(param), Path(weights))
    fp16 = artifact.precision == "fp16"
    options = dict(param=param, bin=weights, inputs=inputs, outputs=outputs, fp16=fp16,
                   fp16_arithmetic=fp16 and bool(meta.get("fp16_arithmetic", False)),
                   int8=artifact.precision == "int8", cpu_powersave=int(meta.get("cpu_powersave") or 0))
    return lambda threads, streams: native.Engine.open_ncnn(threads=threads, **options)


def _openvino_opener(native, artifact: Artifact):
    """The OpenVINO engine compiled as OpenVINOSession compiles it; parallel runs get their streams."""
    from .backends.openvino import XML_FILE, default_inference_precision

    built = artifact.meta.get("session") or {}
    names = artifact.meta.get("tensor_names", {})  # ONNX name -> IR name where they differ
    precision = built.get("inference_precision") or default_inference_precision(artifact.precision)
    options = dict(xml=str(artifact.path(XML_FILE)), device=built.get("device", "CPU"),
                   inputs=[(t.name, _dims(t.shape), t.dtype) for t in artifact.inputs],
                   outputs=[(t.name, _dims(t.shape), t.dtype) for t in artifact.outputs],
                   input_ports=[names.get(t.name, t.name) for t in artifact.inputs],
                   output_ports=[names.get(t.name, t.name) for t in artifact.outputs])

    def open_engine(threads: int, streams: int):
        props = [("PERFORMANCE_HINT", built.get("hint", "LATENCY") if streams == 1 else "THROUGHPUT"),
                 ("INFERENCE_PRECISION_HINT", precision)]
        if streams > 1:
            props.append(("NUM_STREAMS", str(streams)))
        if threads:
            props.append(("INFERENCE_NUM_THREADS", str(threads * streams)))
        return native.Engine.open_openvino(properties=props, threads=threads, **options)

    return open_engine


def open_session(artifact: Artifact, threads: int | None = None, native: bool | None = None,
                 manifest: Manifest | None = None):
    """(session, is_native): the native engine when it can run the artifact (native=None), required
    (True) or never (False); otherwise the backend's Python session. With a manifest, the engine that
    will run is first checked against the versions the bundle was built with."""
    if native is not False:
        reason = NativeSession.unavailable(artifact)
        if reason is None:
            if manifest is not None:
                check_engine(manifest, native=True)
            return NativeSession(artifact, threads=threads), True
        if native:
            raise BackendUnavailable(f"{artifact.root}: no native engine for this bundle: {reason}")
    if manifest is not None:
        check_engine(manifest)
    return registry.get(artifact.backend).open(artifact, threads=threads), False


class Model:
    """A bundle loaded for inference. Model(frame) takes an HxWx3 uint8 BGR frame and returns the named
    outputs plus the post-processing results; infer(feeds) runs tensors as they are."""

    def __init__(self, path: str | Path, threads: int | None = None, verify: bool = True,
                 trusted_keys=None, native: bool | None = None):
        self._unpacked = self._session = None
        self._pools: dict[int, ThreadPoolExecutor] = {}  # stream workers by width, kept until close()
        self._pools_lock = threading.Lock()
        try:
            self._open(Path(path), threads, verify, trusted_keys, native)
        except BaseException:
            self.close()  # nothing half-open: the engine session and any unpacked copy go
            raise

    def _open(self, path: Path, threads: int | None, verify: bool, trusted_keys, native: bool | None) -> None:
        if is_archive(path):
            import tempfile

            from .bundle import extract_archive

            self._unpacked = tempfile.TemporaryDirectory(prefix="edgesdk-bundle-")
            path = extract_archive(path, self._unpacked.name)
        if trusted_keys is not None:
            from .bundle import verify_signature

            verify_signature(path, trusted_keys)  # before anything in the bundle is trusted
        self.manifest = read_manifest(path, verify=verify or trusted_keys is not None)
        m = self.manifest
        self.root = m.root
        self.backend = m.backend
        self.precision = m["precision"]
        self.spec = PreprocessSpec.from_dict(m["preprocess"]) if m["preprocess"] else None
        self.threads = threads if threads is not None else (m.get("threads") or None)
        try:
            artifact = Artifact.load(self.root / MODEL_DIR)
        except BundleError as e:
            raise BundleError(f"{self.root}: {e}") from None
        # native: True when the engine built into edgesdk._native runs this bundle
        self._session, self.native = open_session(artifact, threads=self.threads, native=native,
                                                  manifest=m)
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        self._frame_spec = self._native_spec() if self.native else None
        self.labels = self._labels()
        from .postprocess import get as get_post

        post = dict(m["postprocess"] or {"kind": "none"})
        self._post = get_post(post.pop("kind", "none"), post, labels=self.labels)

    def _native_spec(self):
        """The spec for the fused native frame path, or None when frames take the separate steps
        (no spec, several inputs, or a spec that does not give the input's shape and dtype)."""
        spec = self.spec
        if spec is None or len(self.inputs) != 1:
            return None
        t = self.inputs[0]
        if t.dtype != spec.dtype or len(t.shape) != 4 or any(
                isinstance(d, int) and d != s for d, s in zip(t.shape, spec.output_shape)):
            return None
        return _native_module().PreprocessSpec(size=spec.size, resize=spec.resize, pad=spec.pad, color=spec.color,
                                               mean=spec.mean, std=spec.std, layout=spec.layout, dtype=spec.dtype,
                                               interp=spec.interp)

    def _labels(self) -> list[str] | None:
        rel = self.manifest.get("labels")
        if not rel:
            return None
        try:
            return (self.root / rel).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:  # only when loaded with verify=False
            raise BundleError(f"{self.root}: cannot read the labels file {rel}: {e}") from None

    # ---------------------------------------------------------------- running

    def _image_input(self) -> str:
        if self.spec is None:
            raise EdgeSDKError(f"{self.root}: bundle has no preprocessing spec; call infer() with tensors")
        return self.inputs[0].name

    def prepare(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """The feeds for one frame (preprocessed by the native kernels when built, else numpy)."""
        from .preprocess import preprocess

        check_frame(frame)
        return {self._image_input(): preprocess(frame, self.spec)}

    def _live(self):
        if self._session is None:
            raise EdgeSDKError(f"{self.root}: this model is closed")
        return self._session

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._live().run(feeds)

    def postprocess(self, outputs: dict[str, np.ndarray], frame_shape: tuple[int, int]) -> dict:
        return {**outputs, **self._post(outputs, frame_shape, self.spec)}

    def __call__(self, frame: np.ndarray) -> dict:
        return self._run(frame)

    def _run(self, frame: np.ndarray, threads: int | None = None, streams: int = 1) -> dict:
        if self._frame_spec is not None:  # preprocess into the engine's input and run, without the GIL
            check_frame(frame)
            outputs = self._live().run_frame(frame, self._frame_spec, threads, streams)
        elif self.native:
            outputs = self._live().run(self.prepare(frame), threads, streams)
        else:
            outputs = self.infer(self.prepare(frame))
        return self.postprocess(outputs, frame.shape[:2])

    def infer_batch(self, frames: list[np.ndarray], workers: int | None = None) -> list[dict]:
        return list(self.stream(frames, workers=workers or 1))

    def stream(self, frames: Iterable[np.ndarray], workers: int = 2, queue: int | None = None) -> Iterator[dict]:
        """Results for `frames` in input order, `workers` frames in flight at once (preprocess, inference
        and postprocess of different frames overlap; the engines release the GIL). At most `queue`
        frames are read ahead; an exception from any frame is raised at its place in the order, and a
        consumer that stops early stops the stream (frames not started are dropped).

        On the native engines the bundle's threads are split between the workers: each run gets
        threads // workers engine threads (at least 1), so `workers` runs fill the cores without
        oversubscribing them (OpenVINO compiles `workers` streams)."""
        if not isinstance(workers, int) or workers < 1:
            raise EdgeSDKError(f"workers must be an integer >= 1, got {workers!r}")
        ahead = queue or 2 * workers
        run = self
        if self.native and workers > 1:
            per_run = max(1, (self.threads or os.cpu_count() or 1) // workers)
            run = lambda frame: self._run(frame, per_run, workers)  # noqa: E731
        pool = self._pool(workers)
        pending = []
        try:
            for frame in frames:
                pending.append(pool.submit(run, frame))
                if len(pending) >= ahead:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:  # consumer stopped early or a frame failed: drop what has not started, let the rest end
            for f in pending:
                f.cancel()
            wait(pending)

    def _pool(self, workers: int) -> ThreadPoolExecutor:
        """The stream workers of this width. They live until close(), so their threads keep their
        engine states and a stream starts (and drains) without starting or joining threads."""
        with self._pools_lock:
            if self._session is None:
                raise EdgeSDKError(f"{self.root}: this model is closed")
            pool = self._pools.get(workers)
            if pool is None:
                pool = self._pools[workers] = ThreadPoolExecutor(max_workers=workers,
                                                                 thread_name_prefix=f"edgesdk-stream{workers}")
        return pool

    def check(self) -> "object":
        """Replay the bundle's golden inputs on this device and compare with the reference outputs or,
        for an int8 bundle, with its own outputs on the build machine: int8's error against fp32 was
        measured there on many more images (manifest 'validation' and 'quantization'), and three samples
        near a tie between two classes would fail a correct device by chance."""
        from .validate import compare, tolerance_for

        pairs = self.manifest.golden_pairs()
        if not pairs:
            raise BundleError(f"{self.root}: bundle has no golden samples")
        expected = self.manifest.golden_expected()
        refs = expected or [outs for _, outs in pairs]
        gots = [self.infer(ins) for ins, _ in pairs]
        v = self.manifest["validation"] or {}
        tol = tolerance_for(self.precision, (v.get("tolerance") or {}).get("min_cosine"),
                            (v.get("tolerance") or {}).get("min_top1"))
        report = compare(refs, gots, self.precision, tol)
        if expected:
            report.notes.append("compared with the bundle's own outputs on the build machine")
        return report

    # ---------------------------------------------------------------- lifetime

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():  # stream workers end after the frame each is running
            pool.shutdown(wait=True, cancel_futures=True)
        if getattr(self, "_session", None) is not None:
            self._session.close()
            self._session = None
        if getattr(self, "_unpacked", None) is not None:
            self._unpacked.cleanup()
            self._unpacked = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<edgesdk.Model {self.root} {self.backend} {self.precision} edgesdk {__version__}>"


def load(path: str | Path, threads: int | None = None, verify: bool = True, trusted_keys=None,
         native: bool | None = None) -> Model:
    """Load a bundle directory (or its .tar.gz, unpacked safely into a temporary directory): manifest
    checked (schema, sha256 of every file, engine present and recent enough), session opened,
    pre/post-processing from the manifest. With `trusted_keys` (ed25519 public keys: PEM paths, bytes
    or key objects) an unsigned or wrongly signed bundle is refused. ncnn and OpenVINO bundles run on
    the engines built into edgesdk._native when it has them (`native=None`); `native=True` requires
    them, `native=False` uses the engines' Python packages (Model.native says which runs)."""
    return Model(path, threads=threads, verify=verify, trusted_keys=trusted_keys, native=native)
