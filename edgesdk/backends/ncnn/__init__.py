"""The ncnn backend: pnnx converts on the workstation (convert.py), the ncnn package runs (session.py).

Neither module is imported here, so opening a session never loads the converter and
`import edgesdk.backends.ncnn` needs neither pnnx nor ncnn.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..base import Artifact, ConvertOptions


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
