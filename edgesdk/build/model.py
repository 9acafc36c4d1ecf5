"""Load and check ONNX models; `inspect` reports I/O, op census, parameters, FLOPs and compatibility.

Build side: imports onnx (lazily, so the package imports without it).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from edgesdk.backends.base import first_line as _first_line
from edgesdk.errors import EdgeSDKError, ModelError

DEFAULT_DOMAINS = ("", "ai.onnx")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise EdgeSDKError("reading ONNX models needs the build side: pip install 'edgesdk[build]'") from None
    return onnx


def load_model(path: str | Path, check: bool = True):
    """Read an ONNX file; ModelError naming the file and the problem for anything that is not a valid model."""
    onnx = _onnx()
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise ModelError(f"{p}: empty file, expected an ONNX model")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise ModelError(f"{p}: not a readable ONNX model ({_first_line(e)})") from None
    # Protobuf parses many byte strings without complaint; a real model has a graph and an opset.
    if not model.opset_import or not model.graph.node:
        raise ModelError(f"{p}: not an ONNX model (no graph nodes or no opset_import; truncated or another format?)")
    if check:
        try:
            # The path form handles models over 2 GB and checks external data files.
            onnx.checker.check_model(str(p))
        except Exception as e:
            # A graph output declared without a shape fails the checker, yet shape inference fills it
            # (onnx.helper makes such models): valid once inferred.
            try:
                onnx.checker.check_model(onnx.shape_inference.infer_shapes(model))
            except Exception:
                raise ModelError(f"{p}: ONNX checker: {_first_line(e)}") from None
    return model


def infer_shapes(model, strict: bool = False, source: str | Path = "model"):
    onnx = _onnx()
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=strict, data_prop=True)
    except Exception as e:
        raise ModelError(f"{source}: shape inference failed: {_first_line(e)}") from None


# ---------------------------------------------------------------------------- tensors and shapes

def dim_values(type_proto) -> list[int | str]:
    """A tensor type's dims: ints where fixed, the dim's name (or '?') where dynamic."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return []
    out: list[int | str] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def type_name(type_proto) -> str:
    """numpy dtype name for tensors; an ONNX-style description for sequences and maps."""
    onnx = _onnx()
    which = type_proto.WhichOneof("value")
    if which == "tensor_type":
        try:
            return onnx.helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type).name
        except Exception:
            return onnx.TensorProto.DataType.Name(type_proto.tensor_type.elem_type).lower()
    if which == "sequence_type":
        return f"seq({type_name(type_proto.sequence_type.elem_type)})"
    if which == "map_type":
        key = onnx.TensorProto.DataType.Name(type_proto.map_type.key_type).lower()
        return f"map({key},{type_name(type_proto.map_type.value_type)})"
    return str(which)


def graph_inputs(model) -> list:
    """Real inputs: graph inputs that are not initializers (IR < 4 lists weights as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def io_dicts(values) -> list[dict]:
    return [{"name": v.name, "shape": dim_values(v.type), "dtype": type_name(v.type)} for v in values]


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'images=1x3x224x224' -> ('images', (1, 3, 224, 224)); EdgeSDKError on anything else."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise EdgeSDKError(f"bad --shape {text!r}: expected NAME=DIMxDIMx... with positive integers, e.g. images=1x3x224x224")
    return name, shape


def fix_input_shapes(model, shapes: dict[str, tuple[int, ...]], source: str | Path = "model"):
    """Set the named inputs' dims in place (for FLOP counting and shape-specific builds); checks names and ranks."""
    inputs = {i.name: i for i in graph_inputs(model)}
    for name, shape in shapes.items():
        if name not in inputs:
            raise ModelError(f"{source}: no input named {name!r}; inputs are {sorted(inputs)}")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ModelError(
                f"{source}: input {name!r} has rank {len(dims)} {dim_values(inputs[name].type)}, got shape {list(shape)}")
        for d, v in zip(dims, shape):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != v:
                raise ModelError(
                    f"{source}: input {name!r} is fixed at {dim_values(inputs[name].type)}, got shape {list(shape)}")
            d.Clear()
            d.dim_value = int(v)
    return model


MAX_INPUT_BYTES = 2 << 30  # engines index tensors with 32-bit sizes; no edge model takes inputs this big


def oversized_input(model, shapes: dict | None = None, ranges: dict | None = None) -> tuple[str, str] | None:
    """(name, what is wrong) of an input that would be over MAX_INPUT_BYTES at the shape a build uses (a
    fixed shape given, else its max range, else its declared dims); None when all fit. Nothing is allocated."""
    import numpy as np

    shapes, ranges = shapes or {}, ranges or {}
    for value in graph_inputs(model):
        name = value.name
        shape = shapes.get(name) or (ranges[name].max if name in ranges else dim_values(value.type))
        if not shape or not all(isinstance(d, int) for d in shape):
            continue
        try:
            itemsize = np.dtype(type_name(value.type)).itemsize
        except TypeError:
            itemsize = 1
        nbytes = math.prod(shape) * itemsize
        if nbytes > MAX_INPUT_BYTES:
            return name, (f"input {name!r} of shape {list(shape)} would take {nbytes / (1 << 30):.1f} GiB, "
                          f"over the {MAX_INPUT_BYTES >> 30} GiB edgesdk builds for")
    return None


def check_input_sizes(model, shapes: dict | None = None, ranges: dict | None = None, source: str | Path = "model"):
    """ModelError naming the input (see oversized_input): refused before anything allocates it."""
    found = oversized_input(model, shapes, ranges)
    if found:
        name, problem = found
        raise ModelError(f"{source}: {problem}; give a smaller shape with --shape {name}=... or the profile's "
                         "[inputs] (a dynamic input), or export a smaller model")


# ---------------------------------------------------------------------------- census, params, FLOPs

def all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.HasField("g"):
                yield from all_nodes(attr.g)
            for g in attr.graphs:
                yield from all_nodes(g)


def op_key(node) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}:{node.op_type}"


def op_census(model) -> dict[str, int]:
    return dict(sorted(Counter(op_key(n) for n in all_nodes(model.graph)).items()))


_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def count_params(model) -> int:
    """Elements of floating-point weights: initializers plus Constant nodes (Paddle exports keep weights there)."""
    total = sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in _FLOAT_TYPES)
    for node in all_nodes(model.graph):
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in _FLOAT_TYPES:
                    total += math.prod(a.t.dims)
    return int(total)


def _shape_table(model) -> dict[str, list[int | str]]:
    table = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        table[v.name] = dim_values(v.type)
    for t in model.graph.initializer:
        table[t.name] = list(t.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    table[node.output[0]] = list(a.t.dims)
    return table


def _static(shape) -> bool:
    return bool(shape) and all(isinstance(d, int) for d in shape)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else list(a.ints) if a.type == a.INTS else default
    return default


def _node_macs(node, shapes) -> int | None:
    """Multiply-accumulates of one compute node, or None when its shapes are not static."""
    op = node.op_type
    get = lambda i: shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None  # noqa: E731
    out = shapes.get(node.output[0])
    if op == "Conv":
        w = get(1)
        if not (_static(w) and _static(out)):
            return None
        # out [N, Cout, *spatial]; w [Cout, Cin/group, *kernel]
        return math.prod(out) * math.prod(w[1:])
    if op == "ConvTranspose":
        x, w = get(0), get(1)
        if not (_static(x) and _static(w)):
            return None
        # every input pixel scatters into Cout/group * kernel outputs; w [Cin, Cout/group, *kernel]
        return math.prod(x) * math.prod(w[1:])
    if op == "Gemm":
        a, b = get(0), get(1)
        if not (_static(a) and _static(b)):
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * k * n
    if op == "MatMul":
        a, b = get(0), get(1)
        if not (_static(a) and _static(b) and _static(out)):
            return None
        k = a[-1] if len(a) >= 1 else 1
        return math.prod(out) * k
    return None


FLOP_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def count_flops(model) -> tuple[int | None, list[str]]:
    """FLOPs of Conv/ConvTranspose/Gemm/MatMul with a multiply-add counted once (the convention of the
    MobileNet/EfficientNet papers). Returns (total or None, nodes that could not be counted)."""
    shapes = _shape_table(model)
    total, missing = 0, []
    for node in model.graph.node:
        if node.op_type in FLOP_OPS and node.domain in DEFAULT_DOMAINS:
            macs = _node_macs(node, shapes)
            if macs is None:
                missing.append(node.name or node.op_type)
            else:
                total += macs
    return (None if missing and total == 0 else total), missing
