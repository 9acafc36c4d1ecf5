"""TensorRT session (device side): the plan for this GPU (built and cached on first load), run with
ONNX-named numpy I/O. Thread-safety: one execution context; run() holds a lock, so calls from several
threads are serialised."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgesdk.errors import BundleError, EdgeSDKError, ModelError
from edgesdk.backends.base import Artifact, Closable, check_feeds, check_threads
from edgesdk.backends.tensorrt.config import BUILD_FILE, BuildConfig, _fmt
from edgesdk.backends.tensorrt.cuda import compute_capability, cuda_bindings, trt_module
from edgesdk.backends.tensorrt.plan_cache import ensure_plan, plan_key

class TensorRTSession(Closable):
    """A TensorRT engine for this device (built and cached on first use), run with ONNX-named numpy I/O.

    `threads` is accepted for the common Session signature; the GPU needs no CPU threads.
    """

    def __init__(self, artifact: Artifact | str | Path, threads: int | None = None, cache_dir: Path | None = None):
        check_threads(threads)
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact)
        if artifact.backend != "tensorrt":
            raise BundleError(f"{artifact.root}: artifact is for {artifact.backend!r}, not tensorrt")
        trt = trt_module()
        self._cuda = cuda_bindings()
        self.artifact = artifact
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        self.config = BuildConfig.load(artifact.path(BUILD_FILE))
        self.key = plan_key(self.config, trt.__version__, compute_capability())
        self.plan_path = ensure_plan(artifact, self.config, self.key, cache_dir)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.config.dla_core is not None:
            self._runtime.DLA_core = self.config.dla_core
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise BundleError(f"{self.plan_path}: TensorRT cannot deserialize this plan; delete it to rebuild")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._dtype = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        missing = [t.name for t in self.inputs + self.outputs if t.name not in self._dtype]
        if missing:
            raise BundleError(f"{self.plan_path}: engine has no tensor(s) {missing}; it has {names}")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self._lock = threading.Lock()

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if ptr:
                self._cuda.free(ptr)
            ptr, capacity = self._cuda.malloc(max(nbytes, 1)), max(nbytes, 1)
            self._buffers[name] = (ptr, capacity)
        self._context.set_tensor_address(name, ptr)
        return ptr

    def _check_profile(self, name: str, shape: tuple) -> None:
        r = self.config.profiles.get(name)
        if r and not all(lo <= d <= hi for lo, d, hi in zip(r.min, shape, r.max)):
            raise ModelError(f"{self.artifact.root}: input {name!r} shape {_fmt(shape)} is outside the engine's "
                             f"range min {_fmt(r.min)} .. max {_fmt(r.max)}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._context is None:
            raise EdgeSDKError(f"{self.artifact.root}: session is closed")
        check_feeds(self.inputs, feeds, str(self.artifact.root))
        with self._lock, self._cuda.active():
            # Shapes first: nothing is enqueued until every input is accepted.
            host = {}
            for t in self.inputs:
                a = np.ascontiguousarray(feeds[t.name], dtype=self._dtype[t.name])
                self._check_profile(t.name, a.shape)
                if not self._context.set_input_shape(t.name, a.shape):
                    raise ModelError(f"{self.artifact.root}: TensorRT rejected shape {_fmt(a.shape)} for {t.name!r}")
                host[t.name] = a  # kept alive until the stream is synchronised
            results = {}
            for t in self.outputs:
                shape = tuple(self._context.get_tensor_shape(t.name))
                if any(d < 0 for d in shape):
                    raise EdgeSDKError(f"{self.artifact.root}: output {t.name!r} has a data-dependent shape "
                                       f"{_fmt(shape)}, which this session does not support")
                results[t.name] = np.empty(shape, dtype=self._dtype[t.name])
            for name, a in host.items():
                self._cuda.htod(self._buffer(name, a.nbytes), a)
            for name, out in results.items():
                self._buffer(name, out.nbytes)
            ok = self._context.execute_async_v3(self._cuda.handle())
            if ok:
                for name, out in results.items():
                    self._cuda.dtoh(out, self._buffers[name][0])
            self._cuda.sync()
            if not ok:
                raise EdgeSDKError(f"{self.artifact.root}: TensorRT failed to enqueue the inference")
        return results

    def close(self) -> None:
        with self._lock:
            if self._context is None:
                return
            with self._cuda.active():
                for ptr, _ in self._buffers.values():
                    self._cuda.free(ptr)
            self._buffers.clear()
            self._context = self._engine = None
            self._cuda.close()
