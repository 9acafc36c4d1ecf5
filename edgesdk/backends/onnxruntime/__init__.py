"""ONNX Runtime: the parity reference for every other backend and the x86 fallback target.

session.py runs an artifact (numpy + onnxruntime); convert.py writes it (build side). Neither is
imported here.
"""
from __future__ import annotations

from pathlib import Path

from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions, missing_module


class OnnxRuntimeBackend:
    name = "onnxruntime"
    precisions = PRECISIONS

    def available(self) -> str | None:
        return missing_module("onnxruntime", "onnxruntime is not installed: pip install onnxruntime")

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        from edgesdk.backends.onnxruntime.convert import convert

        return convert(model, out_dir, options)

    def open(self, artifact: Artifact, threads: int | None = None):
        from edgesdk.backends.onnxruntime.session import OnnxRuntimeSession

        return OnnxRuntimeSession(artifact, threads=threads)

    def probe(self, model, path: Path, work: Path, inputs: list, ops: set):
        """What this machine's onnxruntime says about the model (compat's live check)."""
        from edgesdk.backends.onnxruntime.convert import probe

        return probe(model, path, work, inputs, ops)
