"""OpenVINO conversion (build side): ONNX -> IR (model.xml + model.bin) with convert_model/save_model,
int8 with NNCF. Imports onnx (names, error reports) through edgesdk.model.
"""
from __future__ import annotations

import re
from pathlib import Path

from edgesdk.errors import BackendUnavailable, ConversionError, EdgeSDKError, ModelError, UnsupportedOpError
from edgesdk.backends.probe import Probe, engine_label, key_line, report_names
from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions, TensorInfo, check_engine_options, first_line
from edgesdk.backends.openvino.session import BIN_FILE, HINTS, INFERENCE_PRECISIONS, XML_FILE, ov_module, port_index

# A profile's [engine_options] this backend takes; they travel in the artifact to the session.
SESSION_OPTIONS = {"device": str, "hint": str, "inference_precision": str}


def session_options(engine: dict, precision: str) -> dict:
    check_engine_options("openvino", engine, SESSION_OPTIONS)
    if engine.get("hint", "LATENCY") not in HINTS:
        raise ConversionError(f"openvino backend: hint {engine['hint']!r} is not one of {', '.join(HINTS)}")
    if engine.get("inference_precision", "f32") not in INFERENCE_PRECISIONS:
        raise ConversionError(f"openvino backend: inference_precision {engine['inference_precision']!r} is not "
                              f"one of {', '.join(INFERENCE_PRECISIONS)}")
    return dict(engine)


# Lines of the ONNX frontend's report, e.g. "-- No conversion rule found for operations: Det-13, MaxUnpool-13"
_NO_RULE = re.compile(r"No conversion rule found for operations:\s*(.+)")
_FAILED = re.compile(r"Conversion is failed for:\s*(.+)")
_VALUE_INFO = re.compile(r"Unsupported value_info type:\s*(\S+)")


def _unsupported_ops(message: str) -> list[str]:
    """Op names from the frontend's summary, opset suffix dropped: 'Det-13' -> 'Det'."""
    ops: list[str] = []
    for pattern in (_NO_RULE, _FAILED):
        for m in pattern.finditer(message):
            for item in m.group(1).split(","):
                op = re.sub(r"-(\d+|X)$", "", item.strip())
                if op and op not in ops:
                    ops.append(op)
    return ops


def _producer_op(proto, value: str) -> str | None:
    for node in proto.graph.node:
        if value in node.output:
            return f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    return None


def _conversion_error(e: Exception, proto, model: Path) -> EdgeSDKError:
    msg = str(e)
    ops = _unsupported_ops(msg)
    if ops:
        return UnsupportedOpError("openvino", ops, f"{model}: OpenVINO's ONNX frontend has no conversion for them")
    m = _VALUE_INFO.search(msg)
    if m:  # a sequence/map output (e.g. skl2onnx's ZipMap) has no OpenVINO tensor type
        value = m.group(1)
        op = _producer_op(proto, value)
        return UnsupportedOpError(
            "openvino", [op or value],
            f"{model}: tensor {value!r} is not a plain tensor (sequence or map), which OpenVINO cannot represent")
    return ConversionError(f"{model}: OpenVINO convert_model failed: {first_line(e)}")


def _port(ports, name: str, position: int):
    try:
        return ports[port_index(ports, name)]
    except KeyError:
        return ports[position]


def _check_ranges(inputs: list[TensorInfo], ranges: dict, source: Path) -> None:
    by_name = {t.name: t for t in inputs}
    for name, r in ranges.items():
        if name not in by_name:
            raise ModelError(f"{source}: no input named {name!r}; inputs are {sorted(by_name)}")
        rank = len(by_name[name].shape)
        for what in ("min", "opt", "max"):
            if len(getattr(r, what)) != rank:
                raise ModelError(
                    f"{source}: input {name!r} has rank {rank} {list(by_name[name].shape)}, "
                    f"got {what} {list(getattr(r, what))}")
        if any(lo > hi or lo < 1 for lo, hi in zip(r.min, r.max)):
            raise ModelError(f"{source}: input {name!r}: range min {list(r.min)} must be >= 1 and <= max {list(r.max)}")


# OpenVINO op types an ONNX node that holds weights becomes, and the ONNX ops that convert_model folds
# into it when they scale or shift its output by constants (BatchNormalization, or the Mul + Add that
# exporters such as paddle2onnx write for it).
_COUNTERPARTS = {"Conv": {"Convolution", "GroupConvolution"},
                 "ConvTranspose": {"ConvolutionBackpropData", "GroupConvolutionBackpropData"},
                 "Gemm": {"MatMul"}, "MatMul": {"MatMul"}}
_FOLDED_ONNX = {"BatchNormalization", "Mul", "Add", "Sub", "Div"}
_FOLDED_OV = {"Add", "Multiply", "Subtract", "Divide"}
_FOLD_STEPS = 4


def ignored_ops(ov_model, proto, nodes: list[str], source: Path) -> tuple[list[str], list[str]]:
    """OpenVINO op names for ONNX nodes to keep in float, and the nodes that have none.

    convert_model names an op after its ONNX node or, for some ops, after the node's output tensor,
    and splits some nodes in two: Conv with a bias becomes '<name>/WithoutBiases' + '<name>', Gemm
    '<..>/WithoutBiases' + an Add named after the output; every op whose name is the node's or an
    output's, or starts with one plus '/', is taken. A Conv followed by a batch norm is fused with
    it and both names are lost (PP-OCRv4's 'p2o.Conv.1' becomes 'Multiply_11081'): then the node is
    found through the graph, from the first ONNX tensor after it that OpenVINO still names, back up
    through the folded Add/Multiply ops to the convolution. A node found neither way (fused into
    something else) is returned in the second list, for the caller to report: it stays int8."""
    outputs = {n.name: list(n.output) for n in proto.graph.node}
    missing = [n for n in nodes if n not in outputs]
    if missing:
        raise ConversionError(f"{source}: nodes to keep in float {missing} are not in the model")
    found: list[str] = []
    lost: list[str] = []
    for node, hits in _ops_of(ov_model, proto, nodes).items():
        if not hits:
            lost.append(node)
        found.extend(h for h in hits if h not in found)
    return found, lost


def _ops_of(ov_model, proto, nodes: list[str]) -> dict[str, list[str]]:
    """ONNX node name -> the names of the OpenVINO ops convert_model made of it (see ignored_ops)."""
    outputs = {n.name: list(n.output) for n in proto.graph.node}
    ops = list(ov_model.get_ordered_ops())
    names = [op.get_friendly_name() for op in ops]
    found = {}
    for node in nodes:
        keys = [node, *outputs[node]]
        hits = [n for n in names if any(n == k or n.startswith(k + "/") for k in keys)]
        if not hits:
            hit = _through_folds(ops, proto, node)
            hits = [hit] if hit else []
        found[node] = hits
    return found


def quantized_nodes(model: Path, artifact: Artifact) -> set[str]:
    """The ONNX nodes whose OpenVINO op reads a FakeQuantize in the int8 IR: what NNCF quantized, and
    so the only nodes whose float fallback changes anything (it leaves most Add and Mul alone)."""
    from edgesdk.build.model import load_model

    ir = ov_module().Core().read_model(str(artifact.path(XML_FILE)))
    int8 = {op.get_friendly_name() for op in ir.get_ordered_ops()
            if any(v.get_node().get_type_name() == "FakeQuantize" for v in op.input_values())}
    proto = load_model(model)
    hits = _ops_of(ir, proto, [n.name for n in proto.graph.node if n.name])
    return {node for node, names in hits.items() if int8.intersection(names)}


def _through_folds(ops, proto, node_name: str) -> str | None:
    """The OpenVINO op an ONNX node was fused into with the constant scale/shift ops after it."""
    node = next(n for n in proto.graph.node if n.name == node_name)
    want = _COUNTERPARTS.get(node.op_type)
    if not want:  # before the maps below: quantized_nodes asks this of every node OpenVINO renamed
        return None
    by_tensor = {name: op for op in ops for port in op.outputs() for name in port.get_names()}
    consts = {i.name for i in proto.graph.initializer}
    consts.update(o for n in proto.graph.node if n.op_type == "Constant" for o in n.output)
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    tensor = node.output[0]
    for _ in range(_FOLD_STEPS):  # forward in ONNX through one constant scale/shift op at a time
        users = consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type not in _FOLDED_ONNX or len(users[0].output) != 1:
            return None
        user = users[0]
        if any(i != tensor and i and i not in consts for i in user.input):
            return None
        tensor = user.output[0]
        if tensor in by_tensor:
            break
    else:
        return None
    op = by_tensor[tensor]
    for _ in range(_FOLD_STEPS + 1):  # back up in OpenVINO through the folded ops to the weights' op
        if op.get_type_name() in want:
            return op.get_friendly_name()
        if op.get_type_name() not in _FOLDED_OV:
            return None
        ins = [v.get_node() for v in op.input_values() if v.get_node().get_type_name() != "Constant"]
        if len(ins) != 1:
            return None
        op = ins[0]
    return None


def quantize_int8(ov_model, proto, options: ConvertOptions, source: Path):
    """NNCF post-training quantization: int8 weights per channel and activations per tensor
    (NNCF's performance preset), fast bias correction; ONNX nodes in options.exclude stay float.
    calib_method "minmax" takes NNCF's min/max range estimator; "kl" and "aciq" its default, which
    NNCF has no KL or ACIQ counterpart of. Returns the model and the nodes that stayed int8 because
    convert_model fused them into an op that has no counterpart of theirs (see ignored_ops)."""
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError:
        raise BackendUnavailable("OpenVINO int8 needs NNCF: pip install 'edgesdk[openvino]'") from None
    from edgesdk.build.quiet import quiet_build_tools

    if not options.calibration:
        raise ConversionError(f"{source}: int8 needs calibration feeds (images through the target's preprocessing)")
    ignored, lost = ignored_ops(ov_model, proto, options.exclude, source)
    in_ports = list(ov_model.inputs)
    data = [{i: feed[_port_onnx_name(port, feed)] for i, port in enumerate(in_ports)} for feed in options.calibration]
    extra = {}
    if options.calib_method == "minmax":
        extra["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    try:
        with quiet_build_tools():
            return nncf.quantize(ov_model, nncf.Dataset(data), subset_size=len(data),
                                 ignored_scope=nncf.IgnoredScope(names=ignored), **extra), lost
    except Exception as e:
        raise ConversionError(f"{source}: NNCF quantization failed: {first_line(e)}") from e


def _port_onnx_name(port, feed: dict) -> str:
    for name in port.get_names():
        if name in feed:
            return name
    raise ConversionError(f"calibration feeds have {sorted(feed)}; the model input is {sorted(port.get_names())}")


def convert(model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
    """ONNX -> IR. `options.shapes` fixes inputs, `options.ranges` bounds their dynamic dims;
    others stay dynamic. fp16 stores fp16 weights (compress_to_fp16); the CPU computes in fp32.
    int8 quantizes the IR with NNCF on `options.calibration` (see quantize_int8)."""
    from edgesdk.build.model import fix_input_shapes, graph_inputs, io_dicts, load_model
    from edgesdk.atomic import staged_dir

    options = options or ConvertOptions()
    if options.precision not in PRECISIONS:
        raise ConversionError(
            f"openvino backend: precision {options.precision!r} is not supported yet; "
            f"supported: {', '.join(PRECISIONS)}")
    model, out_dir = Path(model), Path(out_dir)
    session = session_options(options.engine, options.precision)
    proto = load_model(model)
    inputs = [TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(proto))]
    outputs = [TensorInfo.from_dict(d) for d in io_dicts(proto.graph.output)]
    if options.shapes:
        fix_input_shapes(proto, options.shapes, source=model)  # checks names, ranks, static dims
    _check_ranges(inputs, options.ranges, model)

    ov = ov_module()
    try:
        ov_model = ov.convert_model(str(model))
    except Exception as e:
        raise _conversion_error(e, proto, model) from e

    # convert_model keeps ONNX names as tensor names; if one were lost, ports keep the ONNX order.
    in_ports = [_port(ov_model.inputs, t.name, k) for k, t in enumerate(inputs)]
    out_ports = [_port(ov_model.outputs, t.name, k) for k, t in enumerate(outputs)]
    renamed = {t.name: p.get_any_name() for t, p in zip(inputs + outputs, in_ports + out_ports)
               if t.name not in p.get_names()}
    by_name = dict(zip([t.name for t in inputs], in_ports))
    new_shapes = {
        by_name[name]: ov.PartialShape([ov.Dimension(lo, hi) for lo, hi in zip(r.min, r.max)])
        for name, r in options.ranges.items()
    }
    new_shapes.update({by_name[name]: ov.PartialShape(list(s)) for name, s in options.shapes.items()})
    if new_shapes:
        try:
            ov_model.reshape(new_shapes)
        except Exception as e:
            raise ConversionError(f"{model}: OpenVINO cannot take shapes {options.shapes or options.ranges}: "
                                  f"{first_line(e)}") from None

    def sized(infos, ports):
        # Dims OpenVINO now knows (fixed inputs propagate to outputs) become ints; the rest keep their names.
        out = []
        for t, port in zip(infos, ports):
            ps = port.get_partial_shape()
            if ps.rank.is_dynamic:
                out.append(t)
                continue
            names = t.shape if len(t.shape) == len(ps) else ("?",) * len(ps)
            dims = tuple(ps[k].get_length() if ps[k].is_static else d for k, d in enumerate(names))
            out.append(TensorInfo(t.name, dims, t.dtype))
        return out

    meta = {}
    if options.precision == "int8":
        ov_model, lost = quantize_int8(ov_model, proto, options, model)
        meta = {"float_nodes": [n for n in options.exclude if n not in lost], "calib_method": options.calib_method}
        if lost:  # quantize_stage reports them: asked for float, quantized anyway
            meta["float_nodes_lost"] = lost
    with staged_dir(out_dir) as tmp:
        try:
            # int8's float layers store fp16 weights (computed in f32): fp16 weights leave top-1 and
            # cosine unchanged on the eval photos, and keep the IR within 0.3x of fp32's size
            ov.save_model(ov_model, str(tmp / XML_FILE), compress_to_fp16=(options.precision != "fp32"))
        except Exception as e:
            raise ConversionError(f"{model}: OpenVINO save_model failed: {first_line(e)}") from None
        artifact = Artifact(
            backend="openvino",
            precision=options.precision,
            root=tmp,
            files=[XML_FILE, BIN_FILE],
            inputs=sized(inputs, in_ports),
            outputs=sized(outputs, out_ports),
            meta={"openvino": ov.get_version(), "tensor_names": renamed, "session": session, **meta},
        )
        artifact.save()
    artifact.root = out_dir
    return artifact


def probe(model, path: Path, work: Path, inputs: list, ops: set) -> Probe:
    """compat's live check: what this machine's engine says about the model file at `path`."""
    import openvino as ov

    who = engine_label("openvino")
    try:
        ov.convert_model(str(path))
    except Exception as e:
        msg = str(e)
        no_rule = [n for m in re.findall(r"No conversion rule found for operations: (.+)", msg) for n in m.split(",")]
        failed = [n for m in re.findall(r"Conversion is failed for: (.+)", msg) for n in m.split(",")]
        # An op that failed only because its input came from an op without a rule is collateral.
        names = report_names(no_rule or failed, ops)
        reason = f"no conversion rule for {', '.join(names)}" if no_rule else key_line(msg)
        if no_rule and failed:
            reason += f"; conversion also failed for {', '.join(report_names(failed, ops))}"
        return Probe(False, names, f"{who} convert_model failed: {reason}")
    return Probe(True, reason=f"{who} converted it")
