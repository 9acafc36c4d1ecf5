"""Rockchip NPU (RK3588, RK3576, RK3568/RK3566, RK3562): rknn-toolkit2 builds a .rknn on the workstation
in its own environment (convert.py drives worker.py there; rknn is never imported here), and
rknn-toolkit-lite2 runs it on the board (session.py). On the workstation, the model just built runs
in the toolkit's x86 simulator (convert.SimulatorSession). Neither module is imported here.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

from edgesdk.backends.base import Artifact, ConvertOptions
from edgesdk.backends.rknn.env import MISSING, PLATFORMS, SETUP_COMMAND, rknn_python  # noqa: F401

def _on_board() -> bool:
    import importlib.util

    return platform.machine().lower() in ("aarch64", "arm64") and importlib.util.find_spec("rknnlite") is not None


class RknnBackend:
    name = "rknn"
    precisions = ("fp16", "int8")  # the NPU has no fp32

    def available(self) -> str | None:
        if _on_board():
            return None
        given = os.environ.get("EDGESDK_RKNN_PYTHON")
        if given and not Path(given).is_file():
            return f"EDGESDK_RKNN_PYTHON={given}: no such file"
        return None if rknn_python() else MISSING

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        from edgesdk.backends.rknn.convert import convert

        return convert(model, out_dir, options)

    def open(self, artifact: Artifact, threads: int | None = None):
        """On the board, the NPU; on the workstation, the simulator holding the model just built."""
        if _on_board():
            from edgesdk.backends.rknn.session import RknnLiteSession

            return RknnLiteSession(artifact, threads=threads)
        from edgesdk.backends.rknn.convert import SimulatorSession

        return SimulatorSession(artifact, threads=threads)

    def probe(self, model, path: Path, work: Path, inputs: list, ops: set, platform: str = PLATFORMS[0]):
        """What rknn-toolkit2, in its own environment, says about the model for `platform` (compat's live
        check: load and an fp16 build in the worker), or why it was not asked."""
        from edgesdk.backends.rknn.probe import probe

        reason = self.available()
        if reason is not None:
            return f"not probed: {reason}"
        return probe(model, path, work, inputs, ops, platform)

    def rank_layers(self, model: Path, artifact: Artifact, samples: list[dict]) -> list[tuple[str, float]]:
        """ONNX nodes worst first by the toolkit's per-layer error (the int8 budget's fallback order)."""
        from edgesdk.backends.rknn.convert import layer_sensitivity

        return layer_sensitivity(model, artifact, samples)
