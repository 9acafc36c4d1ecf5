"""ONNX Runtime: the parity reference for every other backend and the x86 fallback target.

The artifact is the optimized ONNX file itself. Thread-safety: an OnnxRuntimeSession may be run
from several threads at once (onnxruntime's InferenceSession.run is thread-safe).
The session side imports only onnxruntime and numpy; convert() pulls in the build side.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, ConversionError, EdgeSDKError, ModelError
from .base import Artifact, ConvertOptions, TensorInfo

MODEL_FILE = "model.onnx"

# onnxruntime's type strings -> numpy dtype names
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool", "tensor(string)": "object",
}


def check_feeds(inputs: list[TensorInfo], feeds, source: str) -> None:
    """ModelError naming the tensor for a feed that is missing, unknown, or of the wrong dtype, rank or dim."""
    if not isinstance(feeds, dict):
        raise ModelError(f"{source}: feeds must be a dict of input name -> numpy array, got {type(feeds).__name__}")
    known = [t.name for t in inputs]
    missing = [n for n in known if n not in feeds]
    unknown = [n for n in feeds if n not in known]
    if missing or unknown:
        raise ModelError(f"{source}: inputs are {known}; missing {missing}, unknown {unknown}")
    for t in inputs:
        a = feeds[t.name]
        if not isinstance(a, np.ndarray):
            raise ModelError(f"{source}: input {t.name!r}: expected a numpy array, got {type(a).__name__}")
        if a.dtype.name != t.dtype:
            raise ModelError(f"{source}: input {t.name!r}: expected dtype {t.dtype}, got {a.dtype.name}")
        want = list(t.shape)
        if a.ndim != len(want) or any(isinstance(d, int) and d != g for d, g in zip(want, a.shape)):
            raise ModelError(f"{source}: input {t.name!r}: expected shape {want}, got {list(a.shape)}")


def check_threads(threads) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise EdgeSDKError(f"threads must be a positive integer or None, got {threads!r}")


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


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


class OnnxRuntimeSession:
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
            raise ModelError(f"{path}: onnxruntime cannot load it: {_first_line(e)}") from None
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
            raise ModelError(f"{self.path}: onnxruntime failed to run: {_first_line(e)}") from None
        return {t.name: v for t, v in zip(self.outputs, values)}

    def close(self) -> None:
        self._sess = None

    def __enter__(self) -> "OnnxRuntimeSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reference_session(onnx_path: str | Path, threads: int | None = None) -> OnnxRuntimeSession:
    """The ground truth a converted model is checked against: the ONNX file on onnxruntime's CPU EP."""
    return OnnxRuntimeSession(onnx_path, threads=threads)


class OnnxRuntimeBackend:
    name = "onnxruntime"
    precisions = ("fp32",)

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed: pip install onnxruntime"
        return None

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        """Copy the (optimized) ONNX as model.onnx; fixed shapes in `options` are applied by optimize()."""
        from ..model import dim_values, graph_inputs, infer_shapes, io_dicts, load_model
        from ..optimize import optimize, staged_dir

        options = options or ConvertOptions()
        if options.precision not in self.precisions:
            raise ConversionError(
                f"onnxruntime backend: precision {options.precision!r} is not supported yet; "
                f"supported: {', '.join(self.precisions)}")
        model, out_dir = Path(model), Path(out_dir)
        proto = load_model(model)
        declared = {i.name: dim_values(i.type) for i in graph_inputs(proto)}
        # The pipeline hands over a model optimize() already fixed; only re-run it when shapes differ.
        refix = any(declared.get(n) != list(s) for n, s in options.shapes.items())
        with staged_dir(out_dir) as tmp:
            if refix:
                optimize(model, tmp / MODEL_FILE, shapes=options.shapes)
                proto = load_model(tmp / MODEL_FILE, check=False)
            else:
                shutil.copyfile(model, tmp / MODEL_FILE)
            artifact = Artifact(
                backend=self.name,
                precision=options.precision,
                root=tmp,
                files=[MODEL_FILE],
                inputs=[TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(proto))],
                # inferred: an output may be declared without a shape
                outputs=[TensorInfo.from_dict(d) for d in io_dicts(infer_shapes(proto, source=model).graph.output)],
            )
            artifact.save()
        artifact.root = out_dir
        return artifact

    def open(self, artifact: Artifact, threads: int | None = None) -> OnnxRuntimeSession:
        return OnnxRuntimeSession(artifact, threads=threads)


__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeSession", "reference_session", "check_feeds", "MODEL_FILE"]
