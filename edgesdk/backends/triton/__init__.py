"""Triton Inference Server: convert writes a model repository (convert.py) around another engine's
artifact; there is no in-process session (the server runs the model)."""
from __future__ import annotations

from pathlib import Path

from edgesdk.errors import BackendUnavailable
from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions


class TritonBackend:
    name = "triton"
    precisions = PRECISIONS  # what the chosen engine backend accepts is checked by it

    def available(self) -> str | None:
        return "Triton has no in-process session: serve the repository with tritonserver --model-repository=DIR"

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        """Write the model repository: the engine backend converts, Triton's config and README go around it."""
        from edgesdk.backends.triton.convert import convert

        return convert(model, out_dir, options)

    def open(self, artifact: Artifact, threads: int | None = None):
        root = Path(artifact.root).resolve() if isinstance(artifact, Artifact) else Path(artifact).resolve()
        raise BackendUnavailable(
            "Triton has no in-process session: serve the repository with Triton Inference Server: "
            f"tritonserver --model-repository={root}")
