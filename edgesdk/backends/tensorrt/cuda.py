"""The GPU side of TensorRT without TensorRT: the compute capability, device name and CUDA version
(CUDA driver API through ctypes, else Jetson's /proc/device-tree), device and pinned host buffers
(cuda-python when its major version matches the installed CUDA, else pycuda)."""
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


def _libcuda():
    """The CUDA driver library, initialised, or None where there is no driver or no GPU."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    return None if cuda.cuInit(0) else cuda


def _driver_compute_capability(device: int) -> tuple[int, int] | None:
    cuda = _libcuda()
    if cuda is None:
        return None
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR are 75 / 76 in cuda.h.
    if (cuda.cuDeviceGet(ctypes.byref(dev), device)
            or cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)):
        return None
    return major.value, minor.value


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the installed driver supports (cuDriverGetVersion: 12060 -> (12, 6)), or None."""
    cuda = _libcuda()
    version = ctypes.c_int()
    if cuda is None or cuda.cuDriverGetVersion(ctypes.byref(version)):
        return None
    return version.value // 1000, version.value % 1000 // 10


def read_model_file(path: str = "/proc/device-tree/model") -> str | None:
    """A board's model string from the device tree (Jetson, Raspberry Pi, Rockchip), or None."""
    try:
        return Path(path).read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def device_name(device: int = 0) -> str:
    """The GPU's name (cuDeviceGetName), else the board's device-tree model. AGX Orin and Orin Nano are
    both sm_87 but differ in SMs and clocks, so a plan's cache key carries this beside the capability."""
    cuda = _libcuda()
    dev, buf = ctypes.c_int(), ctypes.create_string_buffer(256)
    if cuda is not None and not cuda.cuDeviceGet(ctypes.byref(dev), device) \
            and not cuda.cuDeviceGetName(buf, len(buf), dev) and buf.value:
        return buf.value.decode("utf-8", "replace").strip()
    return read_model_file() or "unknown GPU"


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


def binding_mismatch(binding: str, package_version: str | None, cuda: tuple[int, int] | None) -> str | None:
    """Why a CUDA Python binding built for another CUDA major than the installed driver's cannot be
    used, else None. cuda-python 13 targets CUDA 13; JetPack 6 ships CUDA 12.x."""
    if package_version is None or cuda is None:
        return None
    try:
        major = int(package_version.split(".")[0])
    except ValueError:
        return None
    if major != cuda[0]:
        return (f"{binding} {package_version} is built for CUDA {major}, this device's CUDA driver is "
                f"{cuda[0]}.{cuda[1]}: pip install '{binding}>={cuda[0]},<{cuda[0] + 1}'")
    return None


def _dist_version(*names: str) -> tuple[str, str | None]:
    from importlib import metadata

    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return names[0], None


class _CudaPython:
    """Device memory through cuda-python's runtime API (uses the primary context TensorRT uses)."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # cuda-python < 12.6
        reason = binding_mismatch(*_dist_version("cuda-bindings", "cuda-python"), driver_cuda_version())
        if reason:
            raise _WrongBinding(reason)
        self.rt = rt
        self._hosts: dict[int, int] = {}  # id of a pinned array's buffer -> its pointer
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

    def host_empty(self, nbytes: int) -> np.ndarray:
        """Page-locked host memory (cudaMallocHost): copies from it run asynchronously at full speed."""
        ptr = int(self._call(self.rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))
        self._hosts[id(array)] = ptr
        return array

    def host_free(self, array: np.ndarray) -> None:
        self.rt.cudaFreeHost(self._hosts.pop(id(array)))

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

    def host_empty(self, nbytes: int) -> np.ndarray:
        return self.drv.pagelocked_empty(nbytes, np.uint8)

    def host_free(self, array: np.ndarray) -> None:
        array.base.free()  # pycuda's HostAllocation

    def htod(self, dst: int, src: np.ndarray) -> None:
        self.drv.memcpy_htod_async(dst, src, self.stream)

    def dtoh(self, dst: np.ndarray, src: int) -> None:
        self.drv.memcpy_dtoh_async(dst, src, self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.stream = None


class _WrongBinding(ImportError):
    """A binding that imports but targets another CUDA major: the next one is tried."""


def cuda_bindings():
    """The first CUDA binding usable here: cuda-python built for the installed CUDA major, else pycuda
    (compiled against the CUDA it runs on); BackendUnavailable naming why neither."""
    reasons = []
    for make in (_CudaPython, _PyCuda):
        try:
            return make()
        except _WrongBinding as e:
            reasons.append(str(e))
        except ImportError:
            continue
    raise BackendUnavailable("; ".join(reasons + [NO_CUDA_BINDINGS]))


def cuda_reason() -> str | None:
    import importlib.util

    for module in ("cuda", "pycuda"):
        if importlib.util.find_spec(module) is not None:
            return None
    return NO_CUDA_BINDINGS
