"""The Backend / Session protocols every engine package implements, the Artifact they exchange, and
what every session shares: the feed and thread checks and the close/`with` lifecycle (Polygraphy's
BaseRunner + check_inputs, written once here).

Build and run are separate objects (convert on a workstation, open on the board); a Session
import must pull in nothing of the converter. numpy only.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgesdk.errors import BundleError, ConversionError, EdgeSDKError, ModelError

PRECISIONS = ("fp32", "fp16", "int8")
ARTIFACT_FILE = "artifact.json"


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the ONNX model names it. Dynamic dims are strings."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # numpy dtype name: "float32", "int64", ...

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorInfo":
        name, shape, dtype = d["name"], d["shape"], d["dtype"]
        if not (isinstance(name, str) and isinstance(dtype, str) and isinstance(shape, (list, tuple))
                and all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in shape)):
            raise ValueError(f"tensor {d!r}: expected a name, a shape of ints or dim names, and a dtype")
        return cls(name, tuple(shape), dtype)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max of one dynamic input, as TensorRT's optimisation profiles take them."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass
class ConvertOptions:
    precision: str = "fp32"
    # input name -> fixed shape for this build (from --shape or the profile's [inputs] table)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # input name -> range, for engines that keep dims dynamic (TensorRT profiles, ncnn/OpenVINO)
    ranges: dict[str, ShapeRange] = field(default_factory=dict)
    # engine-specific knobs from the target profile (workspace, DLA core, device hint, ...)
    engine: dict[str, Any] = field(default_factory=dict)
    # int8: calibration feeds keyed by ONNX input names, already through the target's preprocessing
    calibration: list[dict[str, np.ndarray]] | None = None
    # int8: ONNX node names to keep in float (the accuracy budget's sensitive-layer fallback)
    exclude: list[str] = field(default_factory=list)
    # int8: calibration method ("kl" | "minmax" | "aciq"; engines that have fewer take the nearest)
    calib_method: str = "kl"
    # the target's PreprocessSpec, for engines that fold mean/std into the model's input (rknn's NPU)
    preprocess: Any = None
    # the user's model file: convert() reads a temporary optimized copy, so a name derived from the model
    # (Triton's model directory) comes from this one
    source: Path | None = None


@dataclass
class Artifact:
    """What Backend.convert wrote: files relative to `root`, the ONNX-named I/O, engine metadata."""

    backend: str
    precision: str
    root: Path
    files: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, engine-specific

    def path(self, rel: str) -> Path:
        return self.root / rel

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "files": list(self.files),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "meta": self.meta,
        }

    def save(self) -> Path:
        """Write artifact.json beside the files so the directory can be reopened alone."""
        p = self.root / ARTIFACT_FILE
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p

    @classmethod
    def from_dict(cls, d: dict, root: Path) -> "Artifact":
        return cls(
            backend=d["backend"],
            precision=d["precision"],
            root=Path(root),
            files=list(d["files"]),
            inputs=[TensorInfo.from_dict(t) for t in d["inputs"]],
            outputs=[TensorInfo.from_dict(t) for t in d["outputs"]],
            meta=dict(d.get("meta", {})),
        )

    @classmethod
    def load(cls, root: str | Path) -> "Artifact":
        if not Path(root).is_dir():
            raise BundleError(f"{root}: no such artifact directory")
        p = Path(root) / ARTIFACT_FILE
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise BundleError(f"{p}: no artifact description (was this directory written by convert?)") from None
        except (OSError, ValueError) as e:
            raise BundleError(f"{p}: unreadable artifact description: {e}") from None
        try:
            return cls.from_dict(d, Path(root))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{p}: malformed artifact description ({type(e).__name__}: {e})") from None


def first_line(e: BaseException) -> str:
    """The first non-empty line of an engine's exception: the part worth one line of stderr."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def missing_module(module: str, hint: str) -> str | None:
    """None when `module` imports here, else `hint` (a Backend.available() answer)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return hint
    return None


def check_engine_options(backend: str, engine: dict, schema: dict[str, type]) -> None:
    """A profile's [engine_options] against a backend's {name: type}: unknown names and wrong types named."""
    unknown = sorted(set(engine) - set(schema))
    if unknown:
        raise ConversionError(f"{backend} backend: unknown engine option(s) {unknown}; known: {sorted(schema)}")
    for key, kind in schema.items():
        if key in engine and not isinstance(engine[key], kind):
            raise ConversionError(f"{backend} backend: engine option {key} must be {kind.__name__}, got {engine[key]!r}")


def check_feeds(inputs: list[TensorInfo], feeds, source: str) -> None:
    """ModelError naming the tensor for a feed that is missing, unknown, or of the wrong dtype, rank or dim."""
    if not isinstance(feeds, dict):
        raise ModelError(f"{source}: feeds must be a dict of input name -> numpy array, got {type(feeds).__name__}")
    known = [t.name for t in inputs]
    missing = [n for n in known if n not in feeds]
    unknown = [n for n in feeds if n not in known]
    if missing or unknown:
        raise ModelError(f"{source}: inputs are {known}; missing {missing}, unknown {unknown}")
    for t in inputs:
        a = feeds[t.name]
        if not isinstance(a, np.ndarray):
            raise ModelError(f"{source}: input {t.name!r}: expected a numpy array, got {type(a).__name__}")
        if a.dtype.name != t.dtype:
            raise ModelError(f"{source}: input {t.name!r}: expected dtype {t.dtype}, got {a.dtype.name}")
        want = list(t.shape)
        if a.ndim != len(want) or any(isinstance(d, int) and d != g for d, g in zip(want, a.shape)):
            raise ModelError(f"{source}: input {t.name!r}: expected shape {want}, got {list(a.shape)}")


def check_threads(threads) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise EdgeSDKError(f"threads must be a positive integer or None, got {threads!r}")


class Closable:
    """close() and the context manager, once for every session (and the Model): `with` closes on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@runtime_checkable
class Session(Protocol):
    """A loaded model. run() takes and returns tensors keyed by the ONNX names."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    precisions: tuple[str, ...]

    def available(self) -> str | None:
        """None when the engine can be used here, else the reason it cannot."""

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions) -> Artifact:
        """Convert an (already optimized) ONNX file into files under out_dir."""

    def open(self, artifact: Artifact, threads: int | None = None) -> Session:
        """Load an artifact for inference on this machine."""
