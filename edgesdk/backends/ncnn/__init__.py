"""The ncnn backend: pnnx converts on the workstation (convert.py), the ncnn package runs (session.py).

Neither module is imported here, so opening a session never loads the converter and
`import edgesdk.backends.ncnn` needs neither pnnx nor ncnn.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ...errors import ModelError
from ..base import Artifact, ConvertOptions


def check_int8_weights(artifact: Artifact, param: Path, weights: Path) -> None:
    """ncnn reads weights without checking the file's length, so an int8 param beside a bin of another
    build would load and compute garbage: the int8 writer recorded the exact size, checked here."""
    want = (artifact.meta.get("int8") or {}).get("bin_size") if artifact.precision == "int8" else None
    if want is not None and weights.is_file() and weights.stat().st_size != want:
        raise ModelError(f"{weights}: {weights.stat().st_size} bytes where the int8 build wrote {want}; "
                         f"this weight file does not belong to {param.name}")


class NcnnBackend:
    name = "ncnn"
    precisions = ("fp32", "fp16", "int8")

    def available(self) -> str | None:
        if importlib.util.find_spec("ncnn") is None:
            return "the ncnn Python package is not installed (pip install ncnn)"
        return None

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions) -> Artifact:
        from .convert import convert

        return convert(Path(model), Path(out_dir), options)

    def open(self, artifact: Artifact, threads: int | None = None):
        from .session import NcnnSession

        return NcnnSession(artifact, threads=threads)
