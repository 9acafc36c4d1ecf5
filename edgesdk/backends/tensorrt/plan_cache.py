"""The TensorRT plan cache: a plan runs only on the TensorRT version and GPU that built it, so each is
cached keyed by (TensorRT version, compute capability, device name, build config) with a JSON sidecar,
and built on the device with TensorRT's builder when missing or stale.

The cache lives outside the bundle (default ~/.cache/edgesdk/engines, $EDGESDK_ENGINE_CACHE, or the
cache_dir given to load()/open()): a .tar.gz bundle unpacks to a new temporary directory on every
load and a bundle may be read-only, and neither may cost a rebuild (minutes on an Orin Nano). The
build config's digest covers the ONNX's sha256, so it is the bundle's key."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgesdk.atomic import write_bytes
from edgesdk.device.bundle import sha256_file
from edgesdk.errors import BundleError, ConversionError
from edgesdk.backends.base import Artifact
from edgesdk.backends.tensorrt.config import BUILD_FILE, BuildConfig
from edgesdk.backends.tensorrt.cuda import trt_module

CACHE_ENV = "EDGESDK_ENGINE_CACHE"


def default_cache_dir() -> Path:
    """$EDGESDK_ENGINE_CACHE, else ~/.cache/edgesdk/engines."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edgesdk" / "engines").expanduser()


def _slug(name: str) -> str:
    """A file-name form of a device name: readable prefix + a hash of the whole (long names share prefixes)."""
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32].strip("-") or "gpu"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class PlanKey:
    """What a cached plan must match to be loaded: TensorRT version, GPU compute capability and name,
    build config (whose digest includes the ONNX's sha256)."""

    trt_version: str
    compute_capability: tuple[int, int]
    config_sha256: str
    device_name: str = "unknown GPU"

    @property
    def filename(self) -> str:
        major, minor = self.compute_capability
        return f"trt-{self.trt_version}-sm{major}{minor}-{_slug(self.device_name)}-{self.config_sha256[:16]}.plan"

    def to_dict(self) -> dict:
        return {"trt_version": self.trt_version, "compute_capability": list(self.compute_capability),
                "device_name": self.device_name, "config_sha256": self.config_sha256}


def plan_key(config: BuildConfig, trt_version: str, compute_capability: tuple[int, int],
             device_name: str = "unknown GPU") -> PlanKey:
    return PlanKey(str(trt_version), (int(compute_capability[0]), int(compute_capability[1])), config.digest(),
                   str(device_name))


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


def build_plan(onnx_path: Path, config: BuildConfig, timing_cache: Path | None = None) -> bytes:
    """Build a serialized plan with TensorRT's builder: the same settings as trtexec_command(config)."""
    trt = trt_module()
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
    for flag in config.cleared_flags:  # TF32 is on by default: fp32 is asked to mean fp32
        cfg.clear_flag(getattr(trt.BuilderFlag, flag.upper()))
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
    """The cached plan for this device, built (and cached atomically) first if missing or stale.
    `cache_dir` None: default_cache_dir()."""
    engines = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    plan_path, reason = cached_plan(engines, key)
    if reason is None:
        return plan_path
    onnx_path = artifact.path(config.onnx)
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: missing; the TensorRT engine is built from it on the device")
    if sha256_file(onnx_path) != config.onnx_sha256:
        raise BundleError(f"{onnx_path}: does not match the sha256 in {BUILD_FILE}; the artifact was modified")
    major, minor = key.compute_capability
    timing = engines / f"timing-{key.trt_version}-sm{major}{minor}-{_slug(key.device_name)}.cache"  # per device
    try:
        engines.mkdir(parents=True, exist_ok=True)
        plan = build_plan(onnx_path, config, timing)
        store_plan(plan_path, plan, key, config)
    except OSError as e:
        raise BundleError(f"{engines}: cannot write the TensorRT plan cache ({e}); "
                          f"set {CACHE_ENV} or pass a writable cache_dir") from None
    return plan_path
