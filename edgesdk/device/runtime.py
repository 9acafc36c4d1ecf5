"""On-device Model: load a bundle, verify it, run frames through preprocess -> engine -> postprocess.

Device side: imports numpy, the bundle reader, and the one engine the bundle names — never the
build side. ncnn and OpenVINO bundles run on the engines built into edgesdk._native when it has
them (native.py's NativeSession: no GIL, no copies), else on the engines' Python packages. Thread-safety: a Model
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

from edgesdk._version import __version__
from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, Closable
from edgesdk.device.native import NativeSession, native_engine_version, native_module
from edgesdk.device.bundle import MODEL_DIR, Manifest, is_archive, read_manifest
from edgesdk.errors import BackendUnavailable, BundleError, EdgeSDKError
from edgesdk.device.preprocess import PreprocessSpec, check_frame


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


def open_session(artifact: Artifact, threads: int | None = None, native: bool | None = None,
                 manifest: Manifest | None = None, cache_dir: str | Path | None = None):
    """(session, is_native): the native engine when it can run the artifact (native=None), required
    (True) or never (False); otherwise the backend's Python session. With a manifest, the engine that
    will run is first checked against the versions the bundle was built with. `cache_dir` goes to
    engines that build on the device and cache what they build (TensorRT's plans)."""
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
    extra = {"cache_dir": Path(cache_dir)} if cache_dir is not None and artifact.backend == "tensorrt" else {}
    return registry.get(artifact.backend).open(artifact, threads=threads, **extra), False


class Model(Closable):
    """A bundle loaded for inference. Model(frame) takes an HxWx3 uint8 BGR frame and returns the named
    outputs plus the post-processing results; infer(feeds) runs tensors as they are."""

    def __init__(self, path: str | Path, threads: int | None = None, verify: bool = True,
                 trusted_keys=None, native: bool | None = None, cache_dir: str | Path | None = None,
                 tuning: bool | dict = True):
        self._unpacked = self._session = None
        self._tuning_arg = tuning
        self._pools: dict[int, ThreadPoolExecutor] = {}  # stream workers by width, kept until close()
        self._pools_lock = threading.Lock()
        try:
            self._open(Path(path), threads, verify, trusted_keys, native, cache_dir)
        except BaseException:
            self.close()  # nothing half-open: the engine session and any unpacked copy go
            raise

    def _open(self, path: Path, threads: int | None, verify: bool, trusted_keys, native: bool | None,
              cache_dir: str | Path | None = None) -> None:
        if is_archive(path):
            import tempfile

            from edgesdk.device.bundle import extract_archive

            self._unpacked = tempfile.TemporaryDirectory(prefix="edgesdk-bundle-")
            path = extract_archive(path, self._unpacked.name)
        if trusted_keys is not None:
            from edgesdk.device.bundle import verify_signature

            verify_signature(path, trusted_keys)  # before anything in the bundle is trusted
        self.manifest = read_manifest(path, verify=verify or trusted_keys is not None)
        m = self.manifest
        self.root = m.root
        self.backend = m.backend
        self.precision = m["precision"]
        self.spec = PreprocessSpec.from_dict(m["preprocess"]) if m["preprocess"] else None
        # `edgesdk tune` settings (tuning.json beside the manifest) fill what the caller left unset
        from edgesdk.device.tuning import apply_omp_policy, check_settings, read_sidecar

        arg = self._tuning_arg
        tuned = (check_settings(dict(arg), "tuning") if isinstance(arg, dict) else read_sidecar(self.root) if arg
                 else None) or {}
        self.tuning, self.tuning_notes = tuned or None, [n for n in [apply_omp_policy(tuned.get("omp_wait_policy"))] if n]
        self.workers = tuned.get("workers", 2)  # stream()'s default width
        native = tuned.get("native") if native is None else native
        threads = tuned.get("threads") if threads is None else threads
        self.threads = threads if threads is not None else (m.get("threads") or None)
        try:
            artifact = Artifact.load(self.root / MODEL_DIR)
        except BundleError as e:
            raise BundleError(f"{self.root}: {e}") from None
        if tuned.get("cpu_powersave") is not None and artifact.backend == "ncnn":
            artifact.meta["cpu_powersave"] = tuned["cpu_powersave"]  # read by both ncnn sessions at load
        # native: True when the engine built into edgesdk._native runs this bundle
        self._session, self.native = open_session(artifact, threads=self.threads, native=native,
                                                  manifest=m, cache_dir=cache_dir)
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        self._frame_spec = self._native_spec() if self.native else None
        self.labels = self._labels()
        from edgesdk.device.postprocess import get as get_post

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
        return native_module().PreprocessSpec(size=spec.size, resize=spec.resize, pad=spec.pad, color=spec.color,
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
        from edgesdk.device.preprocess import preprocess

        check_frame(frame)
        return {self._image_input(): preprocess(frame, self.spec)}

    def _live(self):
        if self._session is None:
            raise EdgeSDKError(f"{self.root}: this model is closed")
        return self._session

    @property
    def simulator(self) -> str | None:
        """What runs the model here in place of the target's engine (rknn's x86 simulator), or None: its
        timings say nothing of the device's."""
        return getattr(self._live(), "engine_label", None)

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

    def stream(self, frames: Iterable[np.ndarray], workers: int | None = None, queue: int | None = None) -> Iterator[dict]:
        """Results for `frames` in input order, `workers` frames in flight at once (preprocess, inference
        and postprocess of different frames overlap; the engines release the GIL). At most `queue`
        frames are read ahead; an exception from any frame is raised at its place in the order, and a
        consumer that stops early stops the stream (frames not started are dropped).

        On the native engines the bundle's threads are split between the workers: each run gets
        threads // workers engine threads (at least 1), so `workers` runs fill the cores without
        oversubscribing them (OpenVINO compiles `workers` streams). Default width: the tuned one, else 2."""
        workers = self.workers if workers is None else workers
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
        from edgesdk.device.compare import compare, tolerance_for

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

    def __repr__(self) -> str:
        return f"<edgesdk.Model {self.root} {self.backend} {self.precision} edgesdk {__version__}>"


def load(path: str | Path, threads: int | None = None, verify: bool = True, trusted_keys=None,
         native: bool | None = None, cache_dir: str | Path | None = None, tuning: bool | dict = True) -> Model:
    """Load a bundle directory (or its .tar.gz, unpacked safely into a temporary directory): manifest
    checked (schema, sha256 of every file, engine present and recent enough), session opened,
    pre/post-processing from the manifest. With `trusted_keys` (ed25519 public keys: PEM paths, bytes
    or key objects) an unsigned or wrongly signed bundle is refused. ncnn and OpenVINO bundles run on
    the engines built into edgesdk._native when it has them (`native=None`); `native=True` requires
    them, `native=False` uses the engines' Python packages (Model.native says which runs). `cache_dir`:
    where TensorRT caches the plans it builds on first load (default ~/.cache/edgesdk/engines or
    $EDGESDK_ENGINE_CACHE), so a packed or read-only bundle is built once per device. `tuning`: the
    bundle's tuning.json from `edgesdk tune` (threads, stream workers, native, ncnn cpu_powersave, OpenMP wait
    policy) fills what the caller leaves unset (True), is ignored (False), or a dict replaces it."""
    return Model(path, threads=threads, verify=verify, trusted_keys=trusted_keys, native=native,
                 cache_dir=cache_dir, tuning=tuning)
