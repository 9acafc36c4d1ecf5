"""On-device Model: load a bundle, verify it, run frames through preprocess -> engine -> postprocess.

Device side: imports numpy, the bundle reader, and the one engine the bundle names — never the
build side. Thread-safety: a Model may be called from several threads at once; the engine sessions
keep per-thread state (ncnn Extractor per call, OpenVINO request per thread, ORT is thread-safe).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import __version__
from .backends import registry
from .backends.base import Artifact
from .bundle import MODEL_DIR, Manifest, read_manifest
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


def check_engine(manifest: Manifest) -> None:
    """Refuse, with the reason, a bundle whose engine is missing or older than the one it was built with
    (an older engine may lack its layers or IR version: a crash deep inside the engine otherwise)."""
    backend = manifest.backend
    be = registry.get(backend)
    reason = be.available()
    if reason:
        raise BackendUnavailable(f"{manifest.root}: bundle needs the {backend} engine: {reason}")
    built = (manifest["versions"] or {}).get(backend)
    have = engine_version(backend)
    if built and have and backend != "tensorrt" and _numbers(have)[:2] < _numbers(built)[:2]:
        raise BackendUnavailable(f"{manifest.root}: bundle was built for {backend} {built}; this device has {have} "
                                 f"— upgrade {backend} to {'.'.join(map(str, _numbers(built)[:2]))} or newer")


class Model:
    """A bundle loaded for inference. Model(frame) takes an HxWx3 uint8 BGR frame and returns the named
    outputs plus the post-processing results; infer(feeds) runs tensors as they are."""

    def __init__(self, path: str | Path, threads: int | None = None, verify: bool = True,
                 trusted_keys=None):
        self._unpacked = self._session = None
        try:
            self._open(Path(path), threads, verify, trusted_keys)
        except BaseException:
            self.close()  # nothing half-open: the engine session and any unpacked copy go
            raise

    def _open(self, path: Path, threads: int | None, verify: bool, trusted_keys) -> None:
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
            import tempfile

            from .bundle import extract_archive

            self._unpacked = tempfile.TemporaryDirectory(prefix="edgesdk-bundle-")
            path = extract_archive(path, self._unpacked.name)
        if trusted_keys is not None:
            from .bundle import verify_signature

            verify_signature(path, trusted_keys)  # before anything in the bundle is trusted
        self.manifest = read_manifest(path, verify=verify or trusted_keys is not None)
        m = self.manifest
        check_engine(m)
        self.root = m.root
        self.backend = m.backend
        self.precision = m["precision"]
        self.spec = PreprocessSpec.from_dict(m["preprocess"]) if m["preprocess"] else None
        self.threads = threads if threads is not None else (m.get("threads") or None)
        try:
            artifact = Artifact.load(self.root / MODEL_DIR)
        except BundleError as e:
            raise BundleError(f"{self.root}: {e}") from None
        self._session = registry.get(self.backend).open(artifact, threads=self.threads)
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        self.labels = self._labels()
        from .postprocess import get as get_post

        post = dict(m["postprocess"] or {"kind": "none"})
        self._post = get_post(post.pop("kind", "none"), post, labels=self.labels)

    def _labels(self) -> list[str] | None:
        rel = self.manifest.get("labels")
        if not rel:
            return None
        return (self.root / rel).read_text().splitlines()

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

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._session.run(feeds)

    def postprocess(self, outputs: dict[str, np.ndarray], frame_shape: tuple[int, int]) -> dict:
        return {**outputs, **self._post(outputs, frame_shape, self.spec)}

    def __call__(self, frame: np.ndarray) -> dict:
        outputs = self.infer(self.prepare(frame))
        return self.postprocess(outputs, frame.shape[:2])

    def infer_batch(self, frames: list[np.ndarray], workers: int | None = None) -> list[dict]:
        return list(self.stream(frames, workers=workers or 1))

    def stream(self, frames: Iterable[np.ndarray], workers: int = 2, queue: int | None = None) -> Iterator[dict]:
        """Results for `frames` in input order, `workers` frames in flight at once (preprocess, inference
        and postprocess of different frames overlap; the engines release the GIL). At most `queue`
        frames are read ahead; an exception from any frame is raised at its place in the order."""
        if workers < 1:
            raise EdgeSDKError(f"workers must be >= 1, got {workers}")
        ahead = queue or 2 * workers
        pending = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgesdk-stream") as pool:
            try:
                for frame in frames:
                    pending.append(pool.submit(self, frame))
                    if len(pending) >= ahead:
                        yield pending.pop(0).result()
                while pending:
                    yield pending.pop(0).result()
            finally:  # consumer stopped early or a frame failed: drop what has not started
                for f in pending:
                    f.cancel()

    def check(self) -> "object":
        """Replay the bundle's golden inputs on this device and compare with the reference outputs."""
        from .validate import compare, tolerance_for

        pairs = self.manifest.golden_pairs()
        if not pairs:
            raise BundleError(f"{self.root}: bundle has no golden samples")
        refs = [outs for _, outs in pairs]
        gots = [self.infer(ins) for ins, _ in pairs]
        v = self.manifest["validation"] or {}
        tol = tolerance_for(self.precision, (v.get("tolerance") or {}).get("min_cosine"),
                            (v.get("tolerance") or {}).get("min_top1"))
        return compare(refs, gots, self.precision, tol)

    # ---------------------------------------------------------------- lifetime

    def close(self) -> None:
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


def load(path: str | Path, threads: int | None = None, verify: bool = True, trusted_keys=None) -> Model:
    """Load a bundle directory (or its .tar.gz, unpacked safely into a temporary directory): manifest
    checked (schema, sha256 of every file, engine present and recent enough), session opened,
    pre/post-processing from the manifest. With `trusted_keys` (ed25519 public keys: PEM paths, bytes
    or key objects) an unsigned or wrongly signed bundle is refused."""
    return Model(path, threads=threads, verify=verify, trusted_keys=trusted_keys)
