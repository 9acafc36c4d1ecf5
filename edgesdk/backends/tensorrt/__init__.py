"""TensorRT (Jetson and other NVIDIA GPUs): build config on the workstation, engine build on the device.

Split as Polygraphy splits its TensorRT backend: config.py (the build config and trtexec line, pure),
cuda.py (compute capability and device buffers), plan_cache.py (plans keyed by TensorRT version, GPU
and config; built on the device), session.py (device: numpy + tensorrt + CUDA bindings), convert.py
(build side: ONNX checks, Q/DQ for int8, the files). Nothing of them is imported here.
"""
from __future__ import annotations

from pathlib import Path

from edgesdk.errors import BackendUnavailable
from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions, missing_module


class TensorRTBackend:
    name = "tensorrt"
    precisions = PRECISIONS

    def available(self) -> str | None:
        from edgesdk.backends.tensorrt.cuda import NOT_INSTALLED, cuda_reason

        return missing_module("tensorrt", NOT_INSTALLED) or cuda_reason()

    def build_config(self, model: Path, options: ConvertOptions | None = None):
        """Check the ONNX for TensorRT and derive the build config convert() would write."""
        from edgesdk.backends.tensorrt.convert import build_config

        return build_config(model, options)

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        from edgesdk.backends.tensorrt.convert import convert

        return convert(model, out_dir, options)

    def open(self, artifact: Artifact, threads: int | None = None, cache_dir: Path | None = None):
        """`threads`: execution contexts; `cache_dir`: where built plans are cached (default
        ~/.cache/edgesdk/engines or $EDGESDK_ENGINE_CACHE)."""
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        from edgesdk.backends.tensorrt.session import TensorRTSession

        return TensorRTSession(artifact, threads=threads, cache_dir=cache_dir)
