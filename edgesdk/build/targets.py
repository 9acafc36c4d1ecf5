"""Target profiles: one flat TOML per board x engine x precision (targets/*.toml), validated on load.

Unknown keys are an error naming the key and the file; there are no includes and no inheritance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.backends.base import PRECISIONS, ShapeRange
from edgesdk.errors import EdgeSDKError, TargetError
from edgesdk.device.postprocess import check_params
from edgesdk.device.preprocess import PreprocessSpec

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ENGINES = ("ncnn", "openvino", "onnxruntime", "tensorrt", "triton", "rknn")
ARCHES = ("x86_64", "aarch64", "armv7")
POSTPROCESS = ("none", "topk", "yolo", "ppocr-det", "ppocr-rec")
_HERE = Path(__file__).resolve().parent.parent  # the edgesdk package (a wheel ships targets/ inside it)
# Installed wheels carry the profiles inside the package; a source checkout keeps them at the top.
TARGETS_DIR = _HERE / "targets" if (_HERE / "targets").is_dir() else _HERE.parent / "targets"

_TOP_KEYS = {"schema", "name", "description", "engine", "precision", "arch", "threads", "streams",
             "inputs", "preprocess", "postprocess", "validate", "quantize", "engine_options"}
_VALIDATE_KEYS = {"min_cosine", "min_top1", "images"}
_QUANTIZE_KEYS = {"calib_images", "max_top1_drop", "min_cosine", "method", "seed", "float_layers", "top1_margin"}


@dataclass(frozen=True)
class TargetProfile:
    name: str
    engine: str
    precision: str
    arch: str
    threads: int = 0  # 0: the engine's default
    streams: int = 1
    description: str = ""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ranges: dict[str, ShapeRange] = field(default_factory=dict)
    preprocess: PreprocessSpec | None = None
    postprocess: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    validate: dict[str, Any] = field(default_factory=dict)
    quantize: dict[str, Any] = field(default_factory=dict)
    engine_options: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    postprocess_given: bool = False  # a [postprocess] table was written (else the model's metadata may name one)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "engine": self.engine, "precision": self.precision, "arch": self.arch,
            "threads": self.threads, "streams": self.streams, "description": self.description,
            "inputs": {**{k: {"shape": list(v)} for k, v in self.shapes.items()},
                       **{k: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
                          for k, r in self.ranges.items()}},
            "preprocess": self.preprocess.to_dict() if self.preprocess else None,
            "postprocess": dict(self.postprocess), "validate": dict(self.validate),
            "quantize": dict(self.quantize), "engine_options": dict(self.engine_options),
        }


def _fail(src, msg) -> TargetError:
    return TargetError(f"{src}: {msg}")


def _unknown(src, table: str, got: dict, known: set) -> None:
    extra = sorted(set(got) - known)
    if extra:
        where = f"[{table}] " if table else ""
        raise _fail(src, f"unknown key {where}{extra[0]!r}; known keys: {', '.join(sorted(known))}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _table(src, data: dict, key: str) -> dict:
    """A sub-table of the profile ({} when absent); a value of another type is an error naming the key."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(src, f"{key} must be a table ([{key}] with keys below it), got {type(value).__name__} {value!r}")
    return value


def _number(src, where, value, lo, hi):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi):
        raise _fail(src, f"{where} must be a number in [{lo}, {hi}], got {value!r}")
    return value


def _dims(src, where, value) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_is_int(d) and d > 0 for d in value):
        raise _fail(src, f"{where}: expected a list of positive integers, got {value!r}")
    return tuple(value)


def _choice(src, key, value, allowed):
    if value not in allowed:
        raise _fail(src, f"{key} = {value!r} is not one of {', '.join(allowed)}")
    return value


def parse_profile(data: dict, src: str) -> TargetProfile:
    _unknown(src, "", data, _TOP_KEYS)
    if data.get("schema") != 1:
        raise _fail(src, f"schema = {data.get('schema')!r}; this edgesdk reads schema 1")
    for key in ("name", "engine", "precision", "arch"):
        if key not in data:
            raise _fail(src, f"missing required key {key!r}")
    for key in ("name", "description"):
        if key in data and (not isinstance(data[key], str) or (key == "name" and not data[key])):
            raise _fail(src, f"{key} must be a{' non-empty' if key == 'name' else ''} string, got {data[key]!r}")
    shapes, ranges = {}, {}
    for name, spec in _table(src, data, "inputs").items():
        if not isinstance(spec, dict):
            raise _fail(src, f"[inputs.{name}] must be a table with shape = [...] or min/opt/max")
        _unknown(src, f"inputs.{name}", spec, {"shape", "min", "opt", "max"})
        if "shape" in spec:
            if set(spec) != {"shape"}:
                raise _fail(src, f"[inputs.{name}]: give either shape or min/opt/max, not both")
            shapes[name] = _dims(src, f"[inputs.{name}] shape", spec["shape"])
        else:
            if set(spec) != {"min", "opt", "max"}:
                raise _fail(src, f"[inputs.{name}]: needs shape, or all of min, opt and max")
            lo, opt, hi = (_dims(src, f"[inputs.{name}] {k}", spec[k]) for k in ("min", "opt", "max"))
            if not len(lo) == len(opt) == len(hi) or not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise _fail(src, f"[inputs.{name}]: need min <= opt <= max of one rank, got {lo} {opt} {hi}")
            ranges[name] = ShapeRange(lo, opt, hi)
    pre = None
    if "preprocess" in data:
        try:
            pre = PreprocessSpec.from_dict(data["preprocess"])
        except EdgeSDKError as e:
            raise _fail(src, f"[preprocess] {e}") from None
    post = dict(_table(src, data, "postprocess") or {"kind": "none"})
    _choice(src, "[postprocess] kind", post.get("kind", "none"), POSTPROCESS)
    try:
        check_params(post.get("kind", "none"), post)
    except EdgeSDKError as e:
        raise _fail(src, f"[postprocess] {e}") from None
    validate = dict(_table(src, data, "validate"))
    _unknown(src, "validate", validate, _VALIDATE_KEYS)
    _number(src, "[validate] min_cosine", validate.get("min_cosine"), -1.0, 1.0)
    _number(src, "[validate] min_top1", validate.get("min_top1"), 0.0, 1.0)
    quantize = dict(_table(src, data, "quantize"))
    _unknown(src, "quantize", quantize, _QUANTIZE_KEYS)
    if quantize:
        from edgesdk.build.quantize import QuantizeSettings

        try:  # the values, checked by the code that uses them
            QuantizeSettings.from_profile(quantize)
        except EdgeSDKError as e:
            raise _fail(src, str(e)) from None
    engine_options = dict(_table(src, data, "engine_options"))  # keys: checked by the engine's backend
    threads, streams = data.get("threads", 0), data.get("streams", 1)
    if not _is_int(threads) or threads < 0 or not _is_int(streams) or streams < 1:
        raise _fail(src, f"threads must be an integer >= 0 and streams >= 1, got {threads!r}, {streams!r}")
    return TargetProfile(
        name=str(data["name"]),
        engine=_choice(src, "engine", data["engine"], ENGINES),
        precision=_choice(src, "precision", data["precision"], PRECISIONS),
        arch=_choice(src, "arch", data["arch"], ARCHES),
        threads=threads, streams=streams, description=str(data.get("description", "")),
        shapes=shapes, ranges=ranges, preprocess=pre, postprocess=post, validate=validate,
        quantize=quantize, engine_options=engine_options, source=src, postprocess_given="postprocess" in data,
    )


def load_target(name_or_path: str | Path) -> TargetProfile:
    """A built-in profile by name (targets/NAME.toml) or a user's .toml file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_dir():
        raise TargetError(f"{p}: is a directory, expected a .toml profile")
    if p.suffix != ".toml":
        p = TARGETS_DIR / f"{name_or_path}.toml"
        if not p.is_file():
            raise TargetError(f"unknown target {str(name_or_path)!r}; known: {', '.join(list_targets())}")
    if not p.is_file():
        raise TargetError(f"{p}: no such target profile")
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"{p}: not a readable TOML profile ({e})") from None
    return parse_profile(data, str(p))


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))
