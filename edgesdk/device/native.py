"""The engines built into edgesdk._native (ncnn, OpenVINO) as a session: the glue between an artifact
and native/include/edgesdk/engine.h. Device side: numpy and the native module.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgesdk.backends.base import Artifact, Closable, check_feeds
from edgesdk.errors import BundleError, EdgeSDKError


def native_module():
    try:
        from edgesdk import _native
    except ImportError:  # a source tree without the built extension
        return None
    return _native


def native_engine_version(backend: str) -> str | None:
    """The version of an engine linked into edgesdk._native, when build_info reports it (ncnn: static)."""
    native = native_module()
    info = native.build_info() if native is not None else {}
    return info[backend].split()[0] if isinstance(info.get(backend), str) else None


class NativeSession(Closable):
    """An ncnn or OpenVINO artifact run by the engine built into edgesdk._native (contract in
    native/include/edgesdk/engine.h): an immutable engine shared by all threads plus a small state per
    thread. Preprocessing and inference run without the GIL; inputs are read in place, frames are
    preprocessed straight into the engine's input memory, and outputs are arrays over the engine's
    own memory (nothing reuses it).

    Engine threads are fixed when an engine loads (ncnn sizes its gemm tiles then; OpenVINO compiles
    its streams), so every layout — threads per run x runs in parallel — has its own engine, made on
    first use: the default (the bundle's threads, one run at a time) and one per stream() width."""

    def __init__(self, artifact: Artifact, threads: int | None = None):
        native = native_module()
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
        native = native_module()
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
            from edgesdk.backends.openvino.session import DEFAULT_INFERENCE_PRECISION

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
    from edgesdk.backends.ncnn.session import check_int8_weights

    check_int8_weights(artifact, Path(param), Path(weights))
    fp16 = artifact.precision == "fp16"
    options = dict(param=param, bin=weights, inputs=inputs, outputs=outputs, fp16=fp16,
                   fp16_arithmetic=fp16 and bool(meta.get("fp16_arithmetic", False)),
                   int8=artifact.precision == "int8", cpu_powersave=int(meta.get("cpu_powersave") or 0))
    return lambda threads, streams: native.Engine.open_ncnn(threads=threads, **options)


def _openvino_opener(native, artifact: Artifact):
    """The OpenVINO engine compiled as OpenVINOSession compiles it; parallel runs get their streams."""
    from edgesdk.backends.openvino.session import XML_FILE, default_inference_precision

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
