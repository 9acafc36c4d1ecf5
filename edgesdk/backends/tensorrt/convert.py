"""TensorRT (Jetson and other NVIDIA GPUs): build config on the workstation, engine build on the device.

A TensorRT plan only runs on the TensorRT version and GPU architecture that built it, so convert()
does not build one: it writes the ONNX (`model.onnx`), the build config (`build.json`) and the
equivalent `trtexec` line (`trtexec.sh`). On the device the session builds the plan once with
TensorRT's Python API and caches it in the artifact's `engines/` directory as
`trt-<version>-sm<major><minor>-<hash>.plan` plus a JSON sidecar; a cached plan whose key (TensorRT
version, compute capability, build config) does not match the device is rebuilt, never loaded.

The GPU's compute capability comes from the CUDA driver API (libcuda.so.1 through ctypes: it is
present wherever the GPU driver is, JetPack included, with a stable C ABI), else from Jetson's
/proc/device-tree; TensorRT's Python API does not expose it. Device buffers come from cuda-python
(`cuda.bindings.runtime`, formerly `cuda.cudart`) or else pycuda.

Thread-safety: a TensorRTSession has one execution context; run() holds a lock, so calls from
several threads are serialised. The module imports numpy only; tensorrt, CUDA bindings and (for
convert) onnx are imported inside functions.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import shlex
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from ..bundle import sha256_file
from ..errors import BackendUnavailable, BundleError, ConversionError, EdgeSDKError, ModelError, UnsupportedOpError
from .base import Artifact, ConvertOptions, ShapeRange, TensorInfo

MODEL_FILE = "model.onnx"
BUILD_FILE = "build.json"
TRTEXEC_FILE = "trtexec.sh"
PLAN_FILE = "model.plan"  # what the trtexec line saves (also Triton's default name for a plan)
TIMING_CACHE_FILE = "timing.cache"
ENGINES_DIR = "engines"
BUILD_SCHEMA = 1

DEFAULT_WORKSPACE_MB = 1024
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default; 0..5
ENGINE_KEYS = ("workspace_mb", "dla_core", "gpu_fallback", "builder_optimization_level")

NOT_INSTALLED = "TensorRT is not installed; it ships with JetPack on Jetson devices"
NO_CUDA_BINDINGS = ("TensorRT needs CUDA Python bindings for device memory: "
                    "pip install cuda-python (or pycuda)")

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

# Builder precision flags per edgesdk precision. int8 also enables fp16 so the layers the Q/DQ nodes
# leave in float run in half precision, as `trtexec --int8 --fp16` does.
PRECISION_FLAGS = {"fp32": (), "fp16": ("fp16",), "int8": ("int8", "fp16")}

# Jetson SoCs (/proc/device-tree/compatible) -> GPU compute capability, for when libcuda cannot tell.
JETSON_COMPUTE_CAPABILITY = {
    "nvidia,tegra210": (5, 3),  # Jetson Nano, TX1
    "nvidia,tegra186": (6, 2),  # Jetson TX2
    "nvidia,tegra194": (7, 2),  # Jetson AGX Xavier, Xavier NX
    "nvidia,tegra234": (8, 7),  # Jetson AGX Orin, Orin NX, Orin Nano
}


# ---------------------------------------------------------------------------- build config (pure)

@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what TensorRT builds; written as build.json, hashed into the plan's cache key."""

    precision: str
    onnx_sha256: str
    profiles: dict[str, ShapeRange] = field(default_factory=dict)  # dynamic inputs only
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    dla_core: int | None = None
    gpu_fallback: bool = True
    builder_optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL
    onnx: str = MODEL_FILE
    plan: str = PLAN_FILE
    timing_cache: str = TIMING_CACHE_FILE

    @property
    def flags(self) -> tuple[str, ...]:
        return PRECISION_FLAGS[self.precision]

    def to_dict(self) -> dict:
        """JSON form; includes the derived flags and trtexec line for readers, which from_dict ignores."""
        return {
            "schema": BUILD_SCHEMA,
            "onnx": self.onnx,
            "onnx_sha256": self.onnx_sha256,
            "precision": self.precision,
            "flags": list(self.flags),
            "profiles": {n: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
                         for n, r in self.profiles.items()},
            "workspace_mb": self.workspace_mb,
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "builder_optimization_level": self.builder_optimization_level,
            "plan": self.plan,
            "timing_cache": self.timing_cache,
            "trtexec": trtexec_command(self),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = BUILD_FILE) -> "BuildConfig":
        if d.get("schema") != BUILD_SCHEMA:
            raise BundleError(f"{source}: unknown build config schema {d.get('schema')!r}; expected {BUILD_SCHEMA}")
        try:
            return cls(
                precision=d["precision"],
                onnx_sha256=d["onnx_sha256"],
                profiles={n: ShapeRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"]))
                          for n, r in d["profiles"].items()},
                workspace_mb=int(d["workspace_mb"]),
                dla_core=d["dla_core"],
                gpu_fallback=bool(d["gpu_fallback"]),
                builder_optimization_level=int(d["builder_optimization_level"]),
                onnx=d["onnx"],
                plan=d["plan"],
                timing_cache=d["timing_cache"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{source}: malformed build config ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path: str | Path) -> "BuildConfig":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise BundleError(f"{p}: no TensorRT build config (was this artifact written by the tensorrt backend?)") \
                from None
        except (OSError, ValueError) as e:
            raise BundleError(f"{p}: unreadable build config: {e}") from None
        return cls.from_dict(d, p)

    def digest(self) -> str:
        """sha256 of what the builder sees (the derived trtexec line left out)."""
        d = self.to_dict()
        del d["trtexec"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _as_shape(value):
    """Lists become tuples; anything else is left for _check_dims to reject by name."""
    return tuple(value) if isinstance(value, (tuple, list)) else value


def _check_dims(name: str, model_shape: tuple, shape: tuple, what: str, source) -> None:
    """`shape` (one of min/opt/max or a fixed shape) against the model's declared dims."""
    if not isinstance(shape, (tuple, list)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ConversionError(f"{source}: input {name!r}: {what} shape must be a list of integers, got {shape!r}")
    if len(shape) != len(model_shape):
        raise ModelError(f"{source}: input {name!r} has rank {len(model_shape)} {_fmt(model_shape)}, "
                         f"got {what} shape {_fmt(shape)} of rank {len(shape)}")
    for k, (m, d) in enumerate(zip(model_shape, shape)):
        if d < 1:
            raise ConversionError(f"{source}: input {name!r}: {what} shape {_fmt(shape)} has dim {k} = {d}; "
                                  "dims must be >= 1")
        if isinstance(m, int) and m != d:
            raise ModelError(f"{source}: input {name!r} is fixed at {m} in dim {k} {_fmt(model_shape)}, "
                             f"got {what} shape {_fmt(shape)}")


def check_range(name: str, model_shape: tuple, r: ShapeRange, source="model") -> ShapeRange:
    """Validate one min/opt/max range against the model's dims; returns it with tuple dims."""
    r = ShapeRange(_as_shape(r.min), _as_shape(r.opt), _as_shape(r.max))
    for what in ("min", "opt", "max"):
        _check_dims(name, model_shape, getattr(r, what), what, source)
    for k, (lo, mid, hi) in enumerate(zip(r.min, r.opt, r.max)):
        if not lo <= mid <= hi:
            raise ConversionError(
                f"{source}: input {name!r}: need min <= opt <= max in every dim; dim {k} has "
                f"min {lo}, opt {mid}, max {hi} (min {_fmt(r.min)}, opt {_fmt(r.opt)}, max {_fmt(r.max)})")
    return r


def resolve_profiles(inputs: list[TensorInfo], options: ConvertOptions, source="model") -> dict[str, ShapeRange]:
    """One optimisation-profile range per dynamic input: options.ranges as given, options.shapes as
    min = opt = max. Static inputs need none (a shape or range given for one must match it)."""
    by_name = {t.name: t for t in inputs}
    for name in list(options.shapes) + list(options.ranges):
        if name not in by_name:
            raise ModelError(f"{source}: no input named {name!r}; inputs are {sorted(by_name)}")
    both = sorted(set(options.shapes) & set(options.ranges))
    if both:
        raise ConversionError(f"{source}: input(s) {both} have both a fixed shape and a min/opt/max range; give one")
    profiles: dict[str, ShapeRange] = {}
    for t in inputs:
        if t.name in options.ranges:
            r = check_range(t.name, t.shape, options.ranges[t.name], source)
        elif t.name in options.shapes:
            s = _as_shape(options.shapes[t.name])
            _check_dims(t.name, t.shape, s, "fixed", source)
            r = ShapeRange(s, s, s)
        elif t.is_static:
            continue
        else:
            example = "x".join(str(d) if isinstance(d, int) else "?" for d in t.shape)
            raise ConversionError(
                f"{source}: input {t.name!r} has dynamic dims {_fmt(t.shape)}; TensorRT needs a shape range for it: "
                f"add [inputs.{t.name}] with min/opt/max = [...] to the target profile, "
                f"or fix it with --shape {t.name}={example} (a number for each ?)")
        if not t.is_static:
            profiles[t.name] = r
    return profiles


def _engine_options(engine: dict, precision: str, source) -> dict:
    unknown = sorted(set(engine) - set(ENGINE_KEYS))
    if unknown:
        raise ConversionError(f"{source}: unknown TensorRT engine option(s) {unknown}; known: {list(ENGINE_KEYS)}")
    ws = engine.get("workspace_mb", DEFAULT_WORKSPACE_MB)
    if not isinstance(ws, int) or isinstance(ws, bool) or ws < 1:
        raise ConversionError(f"{source}: workspace_mb must be a positive integer (MiB), got {ws!r}")
    level = engine.get("builder_optimization_level", DEFAULT_OPTIMIZATION_LEVEL)
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 5:
        raise ConversionError(f"{source}: builder_optimization_level must be an integer 0..5, got {level!r}")
    dla = engine.get("dla_core")
    if dla is not None and (not isinstance(dla, int) or isinstance(dla, bool) or dla < 0):
        raise ConversionError(f"{source}: dla_core must be a non-negative integer or absent, got {dla!r}")
    if dla is not None and precision == "fp32":
        raise ConversionError(f"{source}: DLA runs fp16 or int8 only; set precision to fp16 (or int8), "
                              "or drop dla_core to build for the GPU")
    fallback = engine.get("gpu_fallback", True)
    if not isinstance(fallback, bool):
        raise ConversionError(f"{source}: gpu_fallback must be true or false, got {fallback!r}")
    return {"workspace_mb": ws, "builder_optimization_level": level, "dla_core": dla, "gpu_fallback": fallback}


def shapes_spec(profiles: dict[str, ShapeRange], which: str) -> str:
    """trtexec's shape spec, e.g. 'x:1x3x640x640,y:1x4'; names with ':' or ',' are single-quoted as trtexec wants."""
    parts = []
    for name, r in profiles.items():
        key = f"'{name}'" if (":" in name or "," in name) else name
        parts.append(key + ":" + "x".join(str(d) for d in getattr(r, which)))
    return ",".join(parts)


def trtexec_command(config: BuildConfig) -> str:
    """The `trtexec` line that builds the same plan as the session's builder, shell-quoted."""
    args = ["trtexec", f"--onnx={config.onnx}", f"--saveEngine={config.plan}", "--skipInference"]
    args += [f"--{flag}" for flag in config.flags]
    args.append(f"--memPoolSize=workspace:{config.workspace_mb}")  # MiB, the unit of every trtexec since 8.4
    args.append(f"--builderOptimizationLevel={config.builder_optimization_level}")
    if config.profiles:
        for which in ("min", "opt", "max"):
            args.append(f"--{which}Shapes={shapes_spec(config.profiles, which)}")
    if config.dla_core is not None:
        args.append(f"--useDLACore={config.dla_core}")
        if config.gpu_fallback:
            args.append("--allowGPUFallback")
    args.append(f"--timingCacheFile={config.timing_cache}")
    return shlex.join(args)


def trtexec_script(config: BuildConfig) -> str:
    return (
        "#!/bin/sh\n"
        "# Builds this model's TensorRT plan with trtexec, exactly as edgesdk's TensorRT session does on first\n"
        "# load (edgesdk caches its own plans under engines/; run this to build or debug outside edgesdk).\n"
        "# JetPack installs trtexec in /usr/src/tensorrt/bin, which is not on PATH. The flags are TensorRT 10's\n"
        "# (JetPack 6); TensorRT 8.5 (JetPack 5) has neither --skipInference nor --builderOptimizationLevel.\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        'PATH="$PATH:/usr/src/tensorrt/bin"\n'
        f"{trtexec_command(config)}\n"
    )


# ---------------------------------------------------------------------------- plan cache key (pure)

@dataclass(frozen=True)
class PlanKey:
    """What a cached plan must match to be loaded: TensorRT version, GPU compute capability, build config."""

    trt_version: str
    compute_capability: tuple[int, int]
    config_sha256: str

    @property
    def filename(self) -> str:
        major, minor = self.compute_capability
        return f"trt-{self.trt_version}-sm{major}{minor}-{self.config_sha256[:16]}.plan"

    def to_dict(self) -> dict:
        return {"trt_version": self.trt_version, "compute_capability": list(self.compute_capability),
                "config_sha256": self.config_sha256}


def plan_key(config: BuildConfig, trt_version: str, compute_capability: tuple[int, int]) -> PlanKey:
    return PlanKey(str(trt_version), (int(compute_capability[0]), int(compute_capability[1])), config.digest())


def plan_mismatch(sidecar: dict | None, key: PlanKey) -> str | None:
    """None when a cached plan with this sidecar may be loaded for `key`, else why it must be rebuilt."""
    if sidecar is None:
        return "no sidecar"
    want = key.to_dict()
    for k, v in want.items():
        if sidecar.get(k) != v:
            return f"{k} is {sidecar.get(k)!r}, this device needs {v!r}"
    return None


def cached_plan(engines_dir: Path, key: PlanKey) -> tuple[Path, str | None]:
    """The plan path for `key` and None if it may be loaded as is, or the reason it must be (re)built.
    The plan must hash to the sha256 its sidecar records: the two files are replaced one after the
    other, so a process killed between the two renames leaves a pair that does not belong together."""
    plan = Path(engines_dir) / key.filename
    if not plan.is_file() or plan.stat().st_size == 0:
        return plan, "not built yet"
    try:
        sidecar = json.loads(plan.with_suffix(".json").read_text())
    except (OSError, ValueError):
        sidecar = None
    if not isinstance(sidecar, dict):
        sidecar = None
    reason = plan_mismatch(sidecar, key)
    if reason is None and sidecar.get("plan_sha256") != sha256_file(plan):
        reason = "the plan does not match the sha256 in its sidecar (an interrupted write or a modified file)"
    return plan, reason


def store_plan(plan_path: Path, plan: bytes, key: PlanKey, config: BuildConfig) -> None:
    """Write plan and sidecar, each atomically; the sidecar (last) carries the plan's sha256, so a plan
    whose sidecar is missing or from another write is never loaded."""
    sidecar = dict(key.to_dict(), plan_sha256=hashlib.sha256(plan).hexdigest(), precision=config.precision,
                   profiles=config.to_dict()["profiles"], dla_core=config.dla_core)
    sidecar = json.dumps(sidecar, indent=2).encode()  # ready before the plan goes in: the torn window stays short
    write_bytes(plan_path, plan)
    write_bytes(plan_path.with_suffix(".json"), sidecar)


# ---------------------------------------------------------------------------- device probes

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


def _trt():
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


def _cuda_bindings():
    """The first CUDA binding importable here: cuda-python, else pycuda; BackendUnavailable if neither."""
    for make, module in ((_CudaPython, "cuda"), (_PyCuda, "pycuda")):
        try:
            return make()
        except ImportError:
            continue
    raise BackendUnavailable(NO_CUDA_BINDINGS)


def _cuda_reason() -> str | None:
    import importlib.util

    for module in ("cuda", "pycuda"):
        if importlib.util.find_spec(module) is not None:
            return None
    return NO_CUDA_BINDINGS


# ---------------------------------------------------------------------------- engine build (device)

def build_plan(onnx_path: Path, config: BuildConfig, timing_cache: Path | None = None) -> bytes:
    """Build a serialized plan with TensorRT's builder: the same settings as trtexec_command(config)."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT 10; 8.x (JetPack 5) must be asked for it.
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")

    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    if hasattr(cfg, "builder_optimization_level"):  # TensorRT >= 8.6; older builders behave as level 3
        cfg.builder_optimization_level = config.builder_optimization_level
    for flag in config.flags:
        value = getattr(trt.BuilderFlag, flag.upper(), None)
        if value is None:  # TensorRT 11 dropped precision flags for strongly typed networks
            raise ConversionError(
                f"TensorRT {trt.__version__} has no {flag.upper()} builder flag; it takes precision from the "
                "network's types: export the ONNX in that precision and build with precision fp32")
        cfg.set_flag(value)
    if config.dla_core is not None:
        if config.dla_core >= builder.num_DLA_cores:
            raise ConversionError(f"dla_core {config.dla_core} requested; this device has {builder.num_DLA_cores} "
                                  "DLA core(s)")
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = config.dla_core
        if config.gpu_fallback:
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if config.profiles:
        profile = builder.create_optimization_profile()
        for name, r in config.profiles.items():
            profile.set_shape(name, r.min, r.opt, r.max)
        cfg.add_optimization_profile(profile)
    if timing_cache is not None:
        cache = cfg.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        cfg.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, cfg)
    if plan is None:
        raise ConversionError(f"{onnx_path}: TensorRT failed to build an engine (see TensorRT's log above)")
    if timing_cache is not None:
        write_bytes(timing_cache, bytes(cfg.get_timing_cache().serialize()))
    return bytes(plan)


def ensure_plan(artifact: Artifact, config: BuildConfig, key: PlanKey, cache_dir: Path | None = None) -> Path:
    """The cached plan for this device, built (and cached atomically) first if missing or stale."""
    engines = Path(cache_dir) if cache_dir is not None else artifact.path(ENGINES_DIR)
    plan_path, reason = cached_plan(engines, key)
    if reason is None:
        return plan_path
    onnx_path = artifact.path(config.onnx)
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: missing; the TensorRT engine is built from it on the device")
    if sha256_file(onnx_path) != config.onnx_sha256:
        raise BundleError(f"{onnx_path}: does not match the sha256 in {BUILD_FILE}; the artifact was modified")
    major, minor = key.compute_capability
    timing = engines / f"timing-{key.trt_version}-sm{major}{minor}.cache"  # timing caches are device-specific
    try:
        engines.mkdir(parents=True, exist_ok=True)
        plan = build_plan(onnx_path, config, timing)
        store_plan(plan_path, plan, key, config)
    except OSError as e:
        raise BundleError(f"{engines}: cannot write the TensorRT plan cache ({e}); "
                          "give TensorRTSession a writable cache_dir") from None
    return plan_path


# ---------------------------------------------------------------------------- session (device)

class TensorRTSession:
    """A TensorRT engine for this device (built and cached on first use), run with ONNX-named numpy I/O.

    `threads` is accepted for the common Session signature; the GPU needs no CPU threads.
    """

    def __init__(self, artifact: Artifact | str | Path, threads: int | None = None, cache_dir: Path | None = None):
        from .onnxruntime import check_threads

        check_threads(threads)
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact)
        if artifact.backend != "tensorrt":
            raise BundleError(f"{artifact.root}: artifact is for {artifact.backend!r}, not tensorrt")
        trt = _trt()
        self._cuda = _cuda_bindings()
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
        from .onnxruntime import check_feeds

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

    def __enter__(self) -> "TensorRTSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- convert (build side)

def unsupported_ops(model) -> list[str]:
    """Ops of `model` TensorRT's ONNX parser cannot take: any op outside the ONNX domain (ai.onnx.ml,
    com.microsoft, ...; those would need a plugin) and the standard ops its support matrix marks "N"."""
    from ..compat import TENSORRT_UNSUPPORTED
    from ..model import op_census

    return [op for op in op_census(model) if ":" in op or op in TENSORRT_UNSUPPORTED]


def has_qdq(model) -> bool:
    from ..model import op_census

    return any(op in op_census(model) for op in QDQ_OPS)


def onnx_io(model) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The model's inputs as declared and its outputs after shape inference (fills dims an exporter left out)."""
    from ..model import graph_inputs, infer_shapes, io_dicts

    outputs = infer_shapes(model).graph.output
    return ([TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(model))],
            [TensorInfo.from_dict(d) for d in io_dicts(outputs)])


def _plain_tensor_types(infos: list[TensorInfo]) -> list[str]:
    """I/O TensorRT has no type for: strings, sequences, maps."""
    return [f"{t.name} ({t.dtype})" for t in infos if t.dtype == "object" or "(" in t.dtype]


def write_build_files(directory: Path, model: Path, config: BuildConfig) -> list[str]:
    """Copy the ONNX and write build.json and trtexec.sh into `directory`; returns their names."""
    shutil.copyfile(model, directory / config.onnx)
    (directory / BUILD_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    script = directory / TRTEXEC_FILE
    script.write_text(trtexec_script(config))
    script.chmod(0o755)
    return [config.onnx, BUILD_FILE, TRTEXEC_FILE]


class TensorRTBackend:
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    def available(self) -> str | None:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return NOT_INSTALLED
        return _cuda_reason()

    def build_config(self, model: Path, options: ConvertOptions | None = None) -> BuildConfig:
        """Check the ONNX for TensorRT and derive the build config convert() would write."""
        return self._prepare(Path(model), options or ConvertOptions())[0]

    def _prepare(self, model: Path, options: ConvertOptions):
        from ..model import load_model

        if options.precision not in self.precisions:
            raise ConversionError(f"tensorrt backend: unknown precision {options.precision!r}; "
                                  f"choose one of {', '.join(self.precisions)}")
        proto = load_model(model)
        bad = unsupported_ops(proto)
        if bad:
            raise UnsupportedOpError("tensorrt", bad, f"{model}: TensorRT's ONNX parser has no import for them")
        inputs, outputs = onnx_io(proto)
        bad_io = _plain_tensor_types(inputs + outputs)
        if bad_io:
            raise UnsupportedOpError("tensorrt", bad_io, f"{model}: TensorRT I/O must be plain numeric tensors")
        if options.precision == "int8" and not has_qdq(proto) and not options.calibration:
            raise ConversionError(
                f"{model}: int8 for TensorRT needs a quantized (Q/DQ) ONNX with QuantizeLinear/DequantizeLinear "
                "nodes, and this model has none; give calibration images to quantize it, or build fp16")
        if any(t.data_location == 1 for t in proto.graph.initializer):  # TensorProto.EXTERNAL
            raise ConversionError(f"{model}: weights in external data files are not supported by this backend yet")
        config = BuildConfig(
            precision=options.precision,
            onnx_sha256=sha256_file(model),
            profiles=resolve_profiles(inputs, options, model),
            **_engine_options(options.engine, options.precision, model),
        )
        return config, inputs, outputs

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        """Write model.onnx, build.json and trtexec.sh; the plan itself is built on the device."""
        from ..atomic import staged_dir

        model, out_dir = Path(model), Path(out_dir)
        options = options or ConvertOptions()
        with tempfile.TemporaryDirectory(prefix="edgesdk-trt-") as work:
            meta = {}
            if options.precision == "int8":
                model, meta = self._quantize(model, Path(work) / MODEL_FILE, options)
            config, inputs, outputs = self._prepare(model, options)
            with staged_dir(out_dir) as tmp:
                files = write_build_files(tmp, model, config)
                artifact = Artifact(
                    backend=self.name,
                    precision=options.precision,
                    root=tmp,
                    files=files,
                    inputs=inputs,
                    outputs=outputs,
                    meta={"build": BUILD_FILE, "trtexec": trtexec_command(config), **meta},
                )
                artifact.save()
        artifact.root = out_dir
        return artifact

    def _quantize(self, model: Path, out: Path, options: ConvertOptions) -> tuple[Path, dict]:
        """QDQ ONNX from onnxruntime's quantizer with TensorRT's int8 scheme: symmetric int8 weights
        per channel and symmetric int8 activations. A model that already has Q/DQ nodes is kept as is."""
        from ..model import load_model
        from .onnxruntime import quantize_qdq

        if has_qdq(load_model(model)) or not options.calibration:  # without either, _prepare says what is missing
            return model, {"qdq_onnx": MODEL_FILE}
        float_nodes = quantize_qdq(model, out, options, symmetric_activations=True)
        return out, {"qdq_onnx": MODEL_FILE, "float_nodes": float_nodes, "calib_method": options.calib_method}

    def open(self, artifact: Artifact, threads: int | None = None) -> TensorRTSession:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        return TensorRTSession(artifact, threads=threads)


__all__ = [
    "TensorRTBackend", "TensorRTSession", "BuildConfig", "PlanKey", "resolve_profiles", "check_range",
    "shapes_spec", "trtexec_command", "plan_key", "plan_mismatch", "cached_plan", "compute_capability",
    "jetson_compute_capability", "build_plan", "ensure_plan", "unsupported_ops", "has_qdq", "onnx_io",
    "write_build_files",
]
