"""TensorRT session (device side): the plan for this GPU (built and cached on first load), run with
ONNX-named numpy I/O. Thread-safety: `threads` execution contexts (1 by default), each with its own
CUDA stream, device buffers and pinned host buffers; run() takes a free one, so that many calls from
several threads overlap on the GPU and further calls wait."""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from edgesdk.errors import BundleError, EdgeSDKError, ModelError
from edgesdk.backends.base import Artifact, Closable, check_feeds, check_threads
from edgesdk.backends.tensorrt.config import BUILD_FILE, BuildConfig, _fmt
from edgesdk.backends.tensorrt.cuda import compute_capability, cuda_bindings, device_name, trt_module
from edgesdk.backends.tensorrt.plan_cache import ensure_plan, plan_key


def contexts_for(threads: int | None, config: BuildConfig, source) -> int:
    """Execution contexts for `threads`. TensorRT lets contexts run concurrently only on distinct
    optimisation profiles, and edgesdk builds one, so an engine with dynamic inputs takes one context."""
    check_threads(threads)
    n = threads or 1
    if n > 1 and config.profiles:
        raise EdgeSDKError(
            f"{source}: threads = {n} asks for {n} TensorRT execution contexts, but inputs {sorted(config.profiles)} "
            "are dynamic and the engine has one optimisation profile, which one context at a time may use: "
            "load with threads=1 (or fix the shapes with --shape to run several contexts)")
    return n


class _Slot:
    """One execution context with its own stream, device buffers and pinned host buffers."""

    def __init__(self, engine, cuda):
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EdgeSDKError("TensorRT could not create an execution context (out of GPU memory?)")
        self.cuda = cuda
        self.device: dict[str, tuple[int, int]] = {}  # name -> (pointer, capacity in bytes)
        self.host: dict[str, np.ndarray] = {}  # name -> pinned uint8 buffer

    def buffers(self, name: str, nbytes: int) -> tuple[int, np.ndarray]:
        """(device pointer, pinned host bytes) of at least nbytes for tensor `name`, bound to the context."""
        ptr, capacity = self.device.get(name, (0, 0))
        if capacity < nbytes:
            if ptr:
                self.cuda.free(ptr)
                self.cuda.host_free(self.host.pop(name))
            capacity = max(nbytes, 1)
            ptr = self.cuda.malloc(capacity)
            self.device[name] = (ptr, capacity)
            self.host[name] = self.cuda.host_empty(capacity)
        self.context.set_tensor_address(name, ptr)
        return ptr, self.host[name][:nbytes]

    def close(self) -> None:
        with self.cuda.active():
            for ptr, _ in self.device.values():
                self.cuda.free(ptr)
            for array in self.host.values():
                self.cuda.host_free(array)
        self.device.clear()
        self.host.clear()
        self.context = None
        self.cuda.close()


class TensorRTSession(Closable):
    """A TensorRT engine for this device (built and cached on first use), run with ONNX-named numpy I/O.

    `threads` is the number of execution contexts (see contexts_for); `cache_dir` where plans are
    cached (plan_cache.default_cache_dir() when None).
    """

    def __init__(self, artifact: Artifact | str | Path, threads: int | None = None, cache_dir: Path | None = None):
        check_threads(threads)
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact)
        if artifact.backend != "tensorrt":
            raise BundleError(f"{artifact.root}: artifact is for {artifact.backend!r}, not tensorrt")
        trt = trt_module()
        self.artifact = artifact
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        self.config = BuildConfig.load(artifact.path(BUILD_FILE))
        self.threads = contexts_for(threads, self.config, artifact.root)
        self.key = plan_key(self.config, trt.__version__, compute_capability(), device_name())
        self.plan_path = ensure_plan(artifact, self.config, self.key, cache_dir)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.config.dla_core is not None:
            self._runtime.DLA_core = self.config.dla_core
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise BundleError(f"{self.plan_path}: TensorRT cannot deserialize this plan; delete it to rebuild")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._dtype = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        missing = [t.name for t in self.inputs + self.outputs if t.name not in self._dtype]
        if missing:
            raise BundleError(f"{self.plan_path}: engine has no tensor(s) {missing}; it has {names}")
        self._slots: list[_Slot] = []
        self._free: queue.Queue[_Slot] = queue.Queue()
        self._lock = threading.Lock()  # guards close() against runs starting
        try:
            for _ in range(self.threads):
                slot = _Slot(self._engine, cuda_bindings())
                self._slots.append(slot)
                self._free.put(slot)
        except BaseException:
            self.close()
            raise

    def _check_profile(self, name: str, shape: tuple) -> None:
        r = self.config.profiles.get(name)
        if r and not all(lo <= d <= hi for lo, d, hi in zip(r.min, shape, r.max)):
            raise ModelError(f"{self.artifact.root}: input {name!r} shape {_fmt(shape)} is outside the engine's "
                             f"range min {_fmt(r.min)} .. max {_fmt(r.max)}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._engine is None:
                raise EdgeSDKError(f"{self.artifact.root}: session is closed")
        check_feeds(self.inputs, feeds, str(self.artifact.root))
        slot = self._free.get()
        try:
            with slot.cuda.active():
                return self._run(slot, feeds)
        finally:
            self._free.put(slot)

    def _run(self, slot: _Slot, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx, cuda = slot.context, slot.cuda
        # Shapes first: nothing is enqueued until every input is accepted.
        arrays = {}
        for t in self.inputs:
            a = np.asarray(feeds[t.name])
            self._check_profile(t.name, a.shape)
            if not ctx.set_input_shape(t.name, a.shape):
                raise ModelError(f"{self.artifact.root}: TensorRT rejected shape {_fmt(a.shape)} for {t.name!r}")
            arrays[t.name] = a
        shapes = {}
        for t in self.outputs:
            shape = tuple(ctx.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise EdgeSDKError(f"{self.artifact.root}: output {t.name!r} has a data-dependent shape "
                                   f"{_fmt(shape)}, which this session does not support")
            shapes[t.name] = shape
        for name, a in arrays.items():  # into pinned memory (cast there), then one async copy each
            dtype = self._dtype[name]
            ptr, host = slot.buffers(name, a.size * dtype.itemsize)
            np.copyto(host.view(dtype).reshape(a.shape), a, casting="same_kind")
            cuda.htod(ptr, host)
        outs = {}
        for name, shape in shapes.items():
            dtype = self._dtype[name]
            outs[name] = slot.buffers(name, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        ok = ctx.execute_async_v3(cuda.handle())
        if ok:
            for ptr, host in outs.values():
                cuda.dtoh(host, ptr)
        cuda.sync()
        if not ok:
            raise EdgeSDKError(f"{self.artifact.root}: TensorRT failed to enqueue the inference")
        # Copied out of the pinned buffers, which the next run on this context reuses.
        return {name: host.view(self._dtype[name]).reshape(shapes[name]).copy() for name, (_, host) in outs.items()}

    def close(self) -> None:
        with self._lock:
            if self._engine is None and not self._slots:
                return
            for slot in self._slots:  # waits for runs in flight: each holds its slot until done
                self._free.get()
            for slot in self._slots:
                slot.close()
            self._slots.clear()
            self._engine = None
