"""The ncnn backend: pnnx converts on the workstation (convert.py, int8.py), the ncnn package runs
(session.py); param.py reads and writes ncnn's model files for all of them.

None of them is imported here, so opening a session never loads the converter and
`import edgesdk.backends.ncnn` needs neither pnnx nor ncnn.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions


class NcnnBackend:
    name = "ncnn"
    precisions = PRECISIONS

    def available(self) -> str | None:
        # found, not imported: a board running the native engine needs no ncnn Python package loaded
        if importlib.util.find_spec("ncnn") is None:
            return "the ncnn Python package is not installed (pip install ncnn)"
        return None

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions) -> Artifact:
        from edgesdk.backends.ncnn.convert import convert

        return convert(Path(model), Path(out_dir), options)

    def retry_on_dynamic_graph(self, error) -> bool:
        """pnnx recognises some patterns (an attention block's q/k/v split) only while their shape
        arithmetic is still in the graph; slimming at fixed shapes folds it into constant reshapes that
        pnnx leaves unlowered (Tensor.reshape, torch.unbind). Such a failure is worth one retry on the
        model slimmed with its dims dynamic, pnnx fixing the shapes itself."""
        return bool(error.ops) and all("." in op for op in error.ops)  # pnnx/torch names, not ONNX op types

    def quantized_nodes(self, model: Path, artifact: Artifact) -> set[str] | None:
        """The ONNX nodes an int8 artifact runs in int8 (those whose ncnn layer was found): the only
        ones whose float fallback changes anything. pnnx fuses some weighted nodes into float-only
        layers (an attention MatMul into MultiHeadAttention); ranking those would waste a step."""
        layers = artifact.meta.get("int8", {}).get("layers")
        return None if layers is None else {entry["onnx"] for entry in layers.values() if entry.get("onnx")}

    def open(self, artifact: Artifact, threads: int | None = None):
        from edgesdk.backends.ncnn.session import NcnnSession

        return NcnnSession(artifact, threads=threads)

    def probe(self, model, path: Path, work: Path, inputs: list, ops: set):
        """What pnnx and this machine's ncnn say about the model (compat's live check)."""
        from edgesdk.backends.ncnn.probe import probe

        return probe(model, path, work, inputs, ops)
