"""OpenVINO: ONNX -> IR (model.xml + model.bin) on the workstation (convert.py: convert_model,
save_model, NNCF for int8), a CPU session on the board (session.py: numpy + openvino).
Neither is imported here.
"""
from __future__ import annotations

from pathlib import Path

from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions, missing_module


class OpenVINOBackend:
    name = "openvino"
    precisions = PRECISIONS

    def available(self) -> str | None:
        return missing_module("openvino", "openvino is not installed: pip install 'edgesdk[openvino]'")

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        from edgesdk.backends.openvino.convert import convert

        return convert(model, out_dir, options)

    def quantized_nodes(self, model: Path, artifact: Artifact) -> set[str]:
        """The ONNX nodes NNCF quantized in the int8 artifact: the only ones worth keeping float."""
        from edgesdk.backends.openvino.convert import quantized_nodes

        return quantized_nodes(model, artifact)

    def open(self, artifact: Artifact, threads: int | None = None):
        from edgesdk.backends.openvino.session import OpenVINOSession

        return OpenVINOSession(artifact, threads=threads)

    def probe(self, model, path: Path, work: Path, inputs: list, ops: set):
        """What this machine's OpenVINO frontend says about the model (compat's live check)."""
        from edgesdk.backends.openvino.convert import probe

        return probe(model, path, work, inputs, ops)
