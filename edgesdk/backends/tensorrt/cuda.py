"""The GPU side of TensorRT without TensorRT: the compute capability (CUDA driver API through ctypes,
else Jetson's /proc/device-tree) and device buffers (cuda-python, else pycuda)."""
from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

import numpy as np

from edgesdk.errors import BackendUnavailable, EdgeSDKError

NOT_INSTALLED = "TensorRT is not installed; it ships with JetPack on Jetson devices"
NO_CUDA_BINDINGS = ("TensorRT needs CUDA Python bindings for device memory: "
                    "pip install cuda-python (or pycuda)")

# Jetson SoCs (/proc/device-tree/compatible) -> GPU compute capability, for when libcuda cannot tell.
JETSON_COMPUTE_CAPABILITY = {
    "nvidia,tegra210": (5, 3),  # Jetson Nano, TX1
    "nvidia,tegra186": (6, 2),  # Jetson TX2
    "nvidia,tegra194": (7, 2),  # Jetson AGX Xavier, Xavier NX
    "nvidia,tegra234": (8, 7),  # Jetson AGX Orin, Orin NX, Orin Nano
}


def jetson_compute_capability(compatible: bytes) -> tuple[int, int] | None:
    """Compute capability from /proc/device-tree/compatible (NUL-separated strings) of a known Jetson."""
    for entry in compatible.split(b"\0"):
        cc = JETSON_COMPUTE_CAPABILITY.get(entry.decode("ascii", "replace").strip())
        if cc:
            return cc
    return None


def _driver_compute_capability(device: int) -> tuple[int, int] | None:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR are 75 / 76 in cuda.h.
    if (cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(dev), device)
            or cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)):
        return None
    return major.value, minor.value


def compute_capability(device: int = 0) -> tuple[int, int]:
    cc = _driver_compute_capability(device)
    if cc is None:
        try:
            cc = jetson_compute_capability(Path("/proc/device-tree/compatible").read_bytes())
        except OSError:
            cc = None
    if cc is None:
        raise BackendUnavailable(
            "cannot find the GPU's compute capability: the CUDA driver (libcuda.so.1) does not answer "
            "and this is not a known Jetson")
    return cc


def trt_module():
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(NOT_INSTALLED) from None
    return tensorrt


class _CudaPython:
    """Device memory through cuda-python's runtime API (uses the primary context TensorRT uses)."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # cuda-python < 12.6
        self.rt = rt
        err, self.stream = rt.cudaStreamCreate()
        if int(err) != 0:  # no GPU, or a driver older than these bindings
            raise BackendUnavailable(f"CUDA is not usable here: cudaStreamCreate failed with {err}")

    def _call(self, result, what):
        err, *rest = result
        if int(err) != 0:
            raise EdgeSDKError(f"CUDA {what} failed: {err}")
        return rest[0] if len(rest) == 1 else None

    def active(self):
        return contextlib.nullcontext()  # the runtime API makes the primary context current by itself

    def handle(self) -> int:
        return int(self.stream)

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def htod(self, dst: int, src: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, self.stream), "copy to device")

    def dtoh(self, dst: np.ndarray, src: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, self.stream), "copy to host")

    def sync(self) -> None:
        self._call(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        self.rt.cudaStreamDestroy(self.stream)


class _PyCuda:
    """Device memory through pycuda, on the device's primary context (the one TensorRT's runtime uses)."""

    def __init__(self):
        import pycuda.driver as drv

        drv.init()
        self.drv = drv
        self.ctx = drv.Device(0).retain_primary_context()
        self.ctx.push()
        try:
            self.stream = drv.Stream()
        finally:
            drv.Context.pop()
        self._allocs: dict[int, object] = {}

    @contextlib.contextmanager
    def active(self):
        """pycuda calls need the context current on the calling thread."""
        self.ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def handle(self) -> int:
        return self.stream.handle

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def htod(self, dst: int, src: np.ndarray) -> None:
        self.drv.memcpy_htod_async(dst, src, self.stream)

    def dtoh(self, dst: np.ndarray, src: int) -> None:
        self.drv.memcpy_dtoh_async(dst, src, self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.stream = None


def cuda_bindings():
    """The first CUDA binding importable here: cuda-python, else pycuda; BackendUnavailable if neither."""
    for make, module in ((_CudaPython, "cuda"), (_PyCuda, "pycuda")):
        try:
            return make()
        except ImportError:
            continue
    raise BackendUnavailable(NO_CUDA_BINDINGS)


def cuda_reason() -> str | None:
    import importlib.util

    for module in ("cuda", "pycuda"):
        if importlib.util.find_spec(module) is not None:
            return None
    return NO_CUDA_BINDINGS
