"""The Backend / Session protocols every engine module implements, and the Artifact they exchange.

Build and run are separate objects (convert on a workstation, open on the board); a Session
import must pull in nothing of the converter.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

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
        from ..errors import BundleError

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
