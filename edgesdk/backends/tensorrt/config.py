"""TensorRT build config (pure, no TensorRT needed): what the builder is asked for, written as
build.json, hashed into the plan cache key, and the equivalent `trtexec` line."""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from edgesdk.errors import BundleError, ConversionError, ModelError
from edgesdk.backends.base import ConvertOptions, ShapeRange, TensorInfo

MODEL_FILE = "model.onnx"
BUILD_FILE = "build.json"
TRTEXEC_FILE = "trtexec.sh"
PLAN_FILE = "model.plan"  # what the trtexec line saves (also Triton's default name for a plan)
TIMING_CACHE_FILE = "timing.cache"
BUILD_SCHEMA = 1

DEFAULT_WORKSPACE_MB = 1024
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default; 0..5
ENGINE_KEYS = ("workspace_mb", "dla_core", "gpu_fallback", "builder_optimization_level", "tensorrt_version")

# Builder precision flags per edgesdk precision. int8 also enables fp16 so the layers the Q/DQ nodes
# leave in float run in half precision, as `trtexec --int8 --fp16` does.
PRECISION_FLAGS = {"fp32": (), "fp16": ("fp16",), "int8": ("int8", "fp16")}
# Builder flags cleared per precision: TensorRT enables TF32 by default, which on Ampere (Orin) runs
# fp32 convolutions and matrix products with a 10-bit mantissa; fp32 asks for fp32.
CLEARED_FLAGS = {"fp32": ("tf32",), "fp16": (), "int8": ()}
TRTEXEC_CLEAR = {"tf32": "--noTF32"}

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

    @property
    def cleared_flags(self) -> tuple[str, ...]:
        return CLEARED_FLAGS[self.precision]

    def to_dict(self) -> dict:
        """JSON form; includes the derived flags and trtexec line for readers, which from_dict ignores."""
        return {
            "schema": BUILD_SCHEMA,
            "onnx": self.onnx,
            "onnx_sha256": self.onnx_sha256,
            "precision": self.precision,
            "flags": list(self.flags),
            "cleared_flags": list(self.cleared_flags),
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
    version = engine.get("tensorrt_version")  # the device's TensorRT: picks compat's table, not the build
    if version is not None and (not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+(\.\d+)*", version)):
        raise ConversionError(f"{source}: tensorrt_version must be a version string like \"10.3\", got {version!r}")
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
    args += [TRTEXEC_CLEAR[flag] for flag in config.cleared_flags]
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
        "# load (edgesdk caches its own plans in ~/.cache/edgesdk/engines; run this to build or debug outside it).\n"
        "# JetPack installs trtexec in /usr/src/tensorrt/bin, which is not on PATH. The flags are TensorRT 10's\n"
        "# (JetPack 6); TensorRT 8.5 (JetPack 5) has neither --skipInference nor --builderOptimizationLevel.\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        'PATH="$PATH:/usr/src/tensorrt/bin"\n'
        f"{trtexec_command(config)}\n"
    )
