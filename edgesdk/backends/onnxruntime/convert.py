"""ONNX Runtime: the parity reference for every other backend and the x86 fallback target.

The artifact is the optimized ONNX file itself: fp32 as is, fp16 with float16 weights and compute
(inputs and outputs stay float32), int8 as a QDQ model from onnxruntime's static quantizer
(`quantize_qdq`, which the TensorRT backend uses too). Thread-safety: an OnnxRuntimeSession may be run
from several threads at once (onnxruntime's InferenceSession.run is thread-safe).
The session side imports only onnxruntime and numpy; convert() pulls in the build side.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, ConversionError, EdgeSDKError, ModelError
from .base import Artifact, ConvertOptions, TensorInfo

MODEL_FILE = "model.onnx"

# calib_method -> onnxruntime CalibrationMethod name. ACIQ clips outliers analytically; the nearest
# onnxruntime has is the percentile calibrator.
CALIBRATION_METHODS = {"kl": "Entropy", "minmax": "MinMax", "aciq": "Percentile"}
# Quantizing Softmax gave all-zero outputs (probabilities far below the int8 step): kept in float always.
NEVER_QUANTIZE = ("Softmax",)
ENGINE_KEYS = ("reduce_range",)

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


# ---------------------------------------------------------------------------- quantization (build side)

def quantize_qdq(model: Path, out: Path, options: ConvertOptions, symmetric_activations: bool = False,
                 reduce_range: bool = False) -> list[str]:
    """onnxruntime's static quantizer in QDQ form: int8 weights per output channel, symmetric;
    activations uint8 asymmetric (onnxruntime's choice for CPUs), or int8 symmetric for TensorRT.
    `options.calibration` feeds the ranges, `options.exclude` (ONNX node names) and every Softmax
    stay float. Returns the names of the nodes kept in float."""
    from ..calibration import FeedReader
    from ..model import load_model
    from ..quantize import quiet_build_tools

    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError:
        raise BackendUnavailable("int8 needs onnxruntime's quantization tools: pip install onnxruntime") from None
    if not options.calibration:
        raise ConversionError(f"{model}: int8 needs calibration feeds (images through the target's preprocessing)")
    if options.calib_method not in CALIBRATION_METHODS:
        raise ConversionError(f"calib_method {options.calib_method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    proto = load_model(model)
    names = {n.name for n in proto.graph.node}
    unknown = [n for n in options.exclude if n not in names]
    if unknown:
        raise ConversionError(f"{model}: nodes to keep in float {unknown} are not in the model")
    keep = list(dict.fromkeys([*options.exclude, *(n.name for n in proto.graph.node if n.op_type in NEVER_QUANTIZE)]))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = FeedReader(options.calibration)

        def get_next(self):
            return self.feeds.get_next()

        def rewind(self):
            self.feeds.rewind()

        def __len__(self):
            return len(self.feeds)

    act = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
    source = model
    import onnx

    try:
        with quiet_build_tools(), tempfile.TemporaryDirectory(prefix="edgesdk-qdq-") as work:
            from ..compat import IR_MAX

            if proto.ir_version > IR_MAX["onnxruntime"]:
                # onnx.helper writes IR 14 by default; onnxruntime loads only up to IR_MAX, and its
                # quantizer reloads the model it augments. Same graph, older IR stamp.
                proto.ir_version = IR_MAX["onnxruntime"]
                source = Path(work) / "model.onnx"
                onnx.save(proto, str(source))
            quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=act, weight_type=QuantType.QInt8,
                            nodes_to_exclude=keep, calibrate_method=CalibrationMethod[CALIBRATION_METHODS[
                                options.calib_method]],
                            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True})
    except Exception as e:
        raise ConversionError(f"{model}: onnxruntime's quantizer failed: {_first_line(e)}") from e
    return keep


def to_fp16(model: Path, out: Path) -> None:
    """float16 weights and compute; inputs and outputs stay float32 (keep_io_types), and ops without
    float16 kernels stay float32 (onnxruntime's own block list)."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise BackendUnavailable("fp16 needs onnxruntime's float16 converter (onnxruntime.transformers)") from None
    from ..model import load_model
    from ..optimize import save_model_atomically

    try:
        half = convert_float_to_float16(load_model(model), keep_io_types=True)
    except Exception as e:
        raise ConversionError(f"{model}: float16 conversion failed: {_first_line(e)}") from e
    save_model_atomically(half, out)


def _engine_options(engine: dict) -> dict:
    unknown = sorted(set(engine) - set(ENGINE_KEYS))
    if unknown:
        raise ConversionError(f"onnxruntime backend: unknown engine option(s) {unknown}; known: {list(ENGINE_KEYS)}")
    if not isinstance(engine.get("reduce_range", False), bool):
        raise ConversionError(f"onnxruntime backend: reduce_range must be true or false, got {engine['reduce_range']!r}")
    return dict(engine)


class OnnxRuntimeBackend:
    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed: pip install onnxruntime"
        return None

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        """Copy the (optimized) ONNX as model.onnx, or its fp16 or int8 QDQ form; fixed shapes in
        `options` are applied by optimize(). int8 on an x86 CPU without VNNI may saturate; the
        engine option reduce_range = true quantizes weights to 7 bits there."""
        from ..model import dim_values, graph_inputs, infer_shapes, io_dicts, load_model
        from ..atomic import staged_dir
        from ..optimize import optimize

        options = options or ConvertOptions()
        if options.precision not in self.precisions:
            raise ConversionError(
                f"onnxruntime backend: precision {options.precision!r} is not supported yet; "
                f"supported: {', '.join(self.precisions)}")
        model, out_dir = Path(model), Path(out_dir)
        if options.precision == "int8" and not options.calibration:  # before any work file exists
            raise ConversionError(f"{model}: int8 needs calibration feeds (images through the target's preprocessing)")
        engine = _engine_options(options.engine)
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
            meta = {}
            if options.precision == "fp16":
                to_fp16(tmp / MODEL_FILE, tmp / MODEL_FILE)
            elif options.precision == "int8":
                source = tmp / f".float-{MODEL_FILE}"
                (tmp / MODEL_FILE).rename(source)
                meta["float_nodes"] = quantize_qdq(source, tmp / MODEL_FILE, options,
                                                   reduce_range=engine.get("reduce_range", False))
                meta["calib_method"] = options.calib_method
                source.unlink()
            artifact = Artifact(
                backend=self.name,
                precision=options.precision,
                root=tmp,
                files=[MODEL_FILE],
                inputs=[TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(proto))],
                # inferred: an output may be declared without a shape
                outputs=[TensorInfo.from_dict(d) for d in io_dicts(infer_shapes(proto, source=model).graph.output)],
                meta=meta,
            )
            artifact.save()
        artifact.root = out_dir
        return artifact

    def open(self, artifact: Artifact, threads: int | None = None) -> OnnxRuntimeSession:
        return OnnxRuntimeSession(artifact, threads=threads)


__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeSession", "reference_session", "check_feeds", "MODEL_FILE",
           "quantize_qdq", "to_fp16"]
