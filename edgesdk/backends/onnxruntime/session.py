"""ONNX Runtime session: an ONNX file on onnxruntime's CPU execution provider. Device side: numpy and
onnxruntime only. Thread-safety: an OnnxRuntimeSession may be run from several threads at once
(onnxruntime's InferenceSession.run is thread-safe).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesdk.errors import BackendUnavailable, EdgeSDKError, ModelError
from edgesdk.backends.base import Artifact, Closable, TensorInfo, check_feeds, check_threads, first_line

MODEL_FILE = "model.onnx"

# onnxruntime's type strings -> numpy dtype names
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool", "tensor(string)": "object",
}


def _model_file(model: Artifact | str | Path) -> Path:
    """The .onnx file of an artifact, an artifact directory, or a path to an .onnx file."""
    if isinstance(model, Artifact):
        return model.path(MODEL_FILE)
    p = Path(model)
    if p.is_dir():
        return Artifact.load(p).path(MODEL_FILE)
    return p


def _tensor_info(arg) -> TensorInfo:
    dims = tuple(d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else "?") for d in arg.shape)
    return TensorInfo(arg.name, dims, _ORT_DTYPES.get(arg.type, "object"))


class OnnxRuntimeSession(Closable):
    """An ONNX model on onnxruntime's CPU execution provider, all graph optimisations on."""

    def __init__(self, model: Artifact | str | Path, threads: int | None = None):
        check_threads(threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
        path = _model_file(model)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 4  # fatal only: run errors reach the caller as ModelError, not as stderr noise
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{path}: onnxruntime cannot load it: {first_line(e)}") from None
        self.path = path
        self.inputs = [_tensor_info(a) for a in self._sess.get_inputs()]
        self.outputs = [_tensor_info(a) for a in self._sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._sess is None:
            raise EdgeSDKError(f"{self.path}: session is closed")
        check_feeds(self.inputs, feeds, str(self.path))
        try:
            values = self._sess.run(None, feeds)
        except Exception as e:  # shape errors deep in the graph, e.g. an H the model cannot take
            raise ModelError(f"{self.path}: onnxruntime failed to run: {first_line(e)}") from None
        return {t.name: v for t, v in zip(self.outputs, values)}

    def close(self) -> None:
        self._sess = None


def reference_session(onnx_path: str | Path, threads: int | None = None) -> OnnxRuntimeSession:
    """The ground truth a converted model is checked against: the ONNX file on onnxruntime's CPU EP."""
    return OnnxRuntimeSession(onnx_path, threads=threads)
