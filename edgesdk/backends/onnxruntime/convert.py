"""ONNX Runtime conversion (build side): the artifact is the optimized ONNX file itself: fp32 as is,
fp16 with float16 weights and compute (inputs and outputs stay float32), int8 as a QDQ model from
onnxruntime's static quantizer (`quantize_qdq`, which the TensorRT backend uses too).
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from edgesdk.errors import BackendUnavailable, ConversionError
from edgesdk.backends.probe import Probe, engine_label, key_line, report_names
from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions, TensorInfo, first_line
from edgesdk.backends.onnxruntime.session import MODEL_FILE

# calib_method -> onnxruntime CalibrationMethod name. ACIQ clips outliers analytically; the nearest
# onnxruntime has is the percentile calibrator.
CALIBRATION_METHODS = {"kl": "Entropy", "minmax": "MinMax", "aciq": "Percentile"}
# Quantizing Softmax gave all-zero outputs (probabilities far below the int8 step): kept in float always.
NEVER_QUANTIZE = ("Softmax",)
ENGINE_KEYS = ("reduce_range",)

QDQ_MIN_OPSET = 13  # per-channel DequantizeLinear takes an axis from opset 13 on


def at_qdq_opset(proto):
    """`proto` at opset 13 or later (converted, node names kept): onnxruntime's quantizer writes
    per-channel DequantizeLinear with an axis without raising the opset, which an opset-12 model
    (PP-OCRv4) then cannot load."""
    from onnx import version_converter

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), QDQ_MIN_OPSET)
    if opset >= QDQ_MIN_OPSET:
        return proto
    try:
        return version_converter.convert_version(proto, QDQ_MIN_OPSET)
    except Exception as e:
        raise ConversionError(f"int8 needs opset {QDQ_MIN_OPSET} for per-channel weights; converting the "
                              f"model from opset {opset} failed: {first_line(e)}") from e


def quantize_qdq(model: Path, out: Path, options: ConvertOptions, reduce_range: bool = False,
                 tensorrt_ops: tuple[str, ...] | None = None) -> list[str]:
    """onnxruntime's static quantizer in QDQ form: int8 weights per output channel, symmetric;
    activations uint8 asymmetric (onnxruntime's choice for CPUs). With `tensorrt_ops`, TensorRT's
    explicit quantization instead: Q/DQ only in front of those ops (each its own pair, as TensorRT
    wants; their outputs not quantized), int8 symmetric activations, biases left float (not int32 behind a DequantizeLinear).
    `options.calibration` feeds the ranges, `options.exclude` (ONNX node names) and every Softmax
    stay float. Returns the names of the nodes kept in float."""
    from edgesdk.build.calibration import FeedReader
    from edgesdk.build.model import load_model
    from edgesdk.build.quiet import quiet_build_tools

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

    trt = bool(tensorrt_ops)
    act = QuantType.QInt8 if trt else QuantType.QUInt8
    source = model
    import onnx

    try:
        with quiet_build_tools(), tempfile.TemporaryDirectory(prefix="edgesdk-qdq-") as work:
            from edgesdk.build.compat_tables import IR_MAX

            raised = at_qdq_opset(proto)
            if proto.ir_version > IR_MAX["onnxruntime"] or raised is not proto:
                # onnx.helper writes IR 14 by default; onnxruntime loads only up to IR_MAX, and its
                # quantizer reloads the model it augments. Same graph, older IR stamp.
                proto = raised
                proto.ir_version = min(proto.ir_version, IR_MAX["onnxruntime"])
                source = Path(work) / "model.onnx"
                onnx.save(proto, str(source))
            quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=act, weight_type=QuantType.QInt8,
                            nodes_to_exclude=keep, op_types_to_quantize=list(tensorrt_ops) if trt else None,
                            calibrate_method=CalibrationMethod[CALIBRATION_METHODS[
                                options.calib_method]],
                            extra_options={"ActivationSymmetric": trt, "WeightSymmetric": True,
                                           "QuantizeBias": not trt, "DedicatedQDQPair": trt,
                                           "OpTypesToExcludeOutputQuantization": list(tensorrt_ops or ())})
    except Exception as e:
        raise ConversionError(f"{model}: onnxruntime's quantizer failed: {first_line(e)}") from e
    return keep


def to_fp16(model: Path, out: Path) -> None:
    """float16 weights and compute; inputs and outputs stay float32 (keep_io_types), and ops without
    float16 kernels stay float32 (onnxruntime's own block list)."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise BackendUnavailable("fp16 needs onnxruntime's float16 converter (onnxruntime.transformers)") from None
    from edgesdk.build.model import load_model
    from edgesdk.build.optimize import save_model_atomically

    try:
        half = convert_float_to_float16(load_model(model), keep_io_types=True)
    except Exception as e:
        raise ConversionError(f"{model}: float16 conversion failed: {first_line(e)}") from e
    save_model_atomically(half, out)


def _engine_options(engine: dict) -> dict:
    unknown = sorted(set(engine) - set(ENGINE_KEYS))
    if unknown:
        raise ConversionError(f"onnxruntime backend: unknown engine option(s) {unknown}; known: {list(ENGINE_KEYS)}")
    if not isinstance(engine.get("reduce_range", False), bool):
        raise ConversionError(f"onnxruntime backend: reduce_range must be true or false, got {engine['reduce_range']!r}")
    return dict(engine)


def convert(model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
    """Copy the (optimized) ONNX as model.onnx, or its fp16 or int8 QDQ form; fixed shapes in
    `options` are applied by optimize(). int8 on an x86 CPU without VNNI may saturate; the
    engine option reduce_range = true quantizes weights to 7 bits there."""
    from edgesdk.build.model import dim_values, graph_inputs, infer_shapes, io_dicts, load_model
    from edgesdk.atomic import staged_dir
    from edgesdk.build.optimize import optimize

    options = options or ConvertOptions()
    if options.precision not in PRECISIONS:
        raise ConversionError(
            f"onnxruntime backend: precision {options.precision!r} is not supported yet; "
            f"supported: {', '.join(PRECISIONS)}")
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
            backend="onnxruntime",
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


def probe(model, path: Path, work: Path, inputs: list, ops: set) -> Probe:
    """compat's live check: what this machine's engine says about the model file at `path`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # kernels are still resolved
    who = engine_label("onnxruntime")
    try:
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = str(e)
        names = re.findall(r"Could not find an implementation for (\w+)\(", msg)
        names += re.findall(r"([\w.]+:\w+)\(-?\d+\) is not a registered function/op", msg)
        names += re.findall(r"No Op registered for (\w+)", msg)
        known = re.search(
            r"Unsupported model IR version[^\n]*|Current official support for domain [\w.]+ is till opset \d+", msg)
        reason = known.group(0) if known else key_line(msg)
        return Probe(False, report_names(names, ops), f"{who} refused it: {reason}")
    return Probe(True, reason=f"{who} loaded it")
