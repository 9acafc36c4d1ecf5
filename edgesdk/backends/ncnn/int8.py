"""ncnn post-training int8, written here from ncnn's documented scheme (the ncnn package ships no
ncnn2table / ncnn2int8). Build side: numpy, the ncnn package (calibration runs the fp32 model) and
onnx (only to map ONNX node names onto ncnn layers).

The scheme ncnn's int8 kernels implement:
- Convolution, ConvolutionDepthWise and InnerProduct hold int8 weights, quantized symmetrically per
  output channel (per group for depthwise): scale = 127 / absmax of the channel (31 for 3x3
  stride-1 convolutions, which ncnn may run as int8 Winograd).
- Each of them quantizes its input blob with one scale, 127 / threshold, the threshold coming from
  calibration on real inputs: KL divergence between the |x| histogram (2048 bins, exact zeros left
  out) and its 128-level quantization (TensorRT's and ncnn2table's entropy method), min-max, or
  ACIQ (the MSE-optimal clip of a Laplace fit).
- ncnn turns int32 sums back into floats with 1 / (input scale * weight scale) and adds the fp32
  bias; every other layer runs in fp32. An int8 convolution whose output feeds only int8
  convolutions requantizes it straight to int8 with their input scale (int8_scale_term 101).
On top of ncnn2table's scheme the bias absorbs the mean output shift the int8 weights cause on the
calibration data (bias correction), which ncnn runs unchanged.

What is written (param key 8 is int8_scale_term; ncnn's load_model reads in this order):
  Convolution, InnerProduct   [int8 tag][int8 weights, padded to 4 bytes][fp32 bias]
                              [fp32 scale per output][fp32 input scale]([fp32 output scale if 101])
  ConvolutionDepthWise        the same with one weight scale per group
Weights that stay float are written as plain fp32 (4 zero bytes tag, then the floats).
"""
from __future__ import annotations

import numpy as np

from edgesdk.atomic import write_bytes
from edgesdk.errors import ConversionError
from edgesdk.backends.base import Artifact, TensorInfo
# int8.X for the stats and file helpers it is built from (tests and benchmarks read them through here)
from edgesdk.backends.ncnn.calibrate import INT8_MAX, BlobStats, calibrate, input_scale, kl_threshold  # noqa: F401
from edgesdk.backends.ncnn.param import QUANTIZABLE, TAG_INT8, ParamLayer, format_param, read_bin  # noqa: F401
from edgesdk.backends.ncnn.param import read_param, weight_slots, write_bin  # noqa: F401

METHODS = ("kl", "minmax", "aciq")
# Producers and consumers of a requantized int8 blob: the layers whose x86/arm kernels take int8 input.
REQUANTIZE_LAYERS = ("Convolution", "ConvolutionDepthWise")
def weight_scales(weight: np.ndarray, groups: int, levels: int = INT8_MAX) -> np.ndarray:
    """levels / absmax per output channel (or group); 1 for an all-zero channel, whose int8 weights are 0 anyway."""
    absmax = np.abs(weight.reshape(groups, -1)).astype(np.float64).max(axis=1)
    # a channel of denormal-small weights is zero for int8 purposes (and levels / absmax would overflow)
    live = absmax > levels / np.finfo(np.float32).max
    return np.where(live, levels / np.where(live, absmax, 1.0), 1.0).astype(np.float32)


def quantize_weights(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = np.rint(weight.reshape(len(scales), -1).astype(np.float64) * scales[:, None])
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8).ravel()


def weight_levels(layer: ParamLayer) -> int:
    """127, or 31 for a 3x3 stride-1 Convolution: ncnn may run it with int8 Winograd F(4,3), whose
    transformed weights overflow int16 unless the weights keep to 6 bits (as ncnn2table does)."""
    g = layer.get
    if layer.type == "Convolution" and (g(1), g(11, g(1)), g(2, 1), g(12, g(2, 1)), g(3, 1), g(13, g(3, 1))) == (3, 3, 1, 1, 1, 1):
        return 31
    return INT8_MAX


def bias_shift(layer: ParamLayer, weight: np.ndarray, quantized: np.ndarray, scales: np.ndarray,
               input_mean: np.ndarray) -> np.ndarray | None:
    """Mean output error per output channel that int8 weights add on the calibration data
    (sum of weight error x mean input per channel, padding ignored); None when the input's
    layout does not match the weights."""
    n_out = layer.get(0)
    groups = layer.get(7, 1) if layer.type == "ConvolutionDepthWise" else 1
    in_per_group = len(input_mean) // groups
    if in_per_group * groups != len(input_mean) or weight.size % (n_out * in_per_group):
        return None
    error = quantized.reshape(len(scales), -1).astype(np.float64) / scales[:, None] - weight.reshape(len(scales), -1)
    error = error.reshape(n_out, in_per_group, -1).sum(axis=2)  # over kernel taps
    means = input_mean.reshape(groups, in_per_group)[np.arange(n_out) // (n_out // groups)]
    return (error * means).sum(axis=1)


def _onnx_weights(proto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    found = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def _onnx_rows(node, weight: np.ndarray) -> np.ndarray | None:
    """The node's weight as (outputs, inputs) rows, laid out as ncnn stores them."""
    if weight.ndim < 2:
        return None
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    if node.op_type == "Gemm" and trans_b:
        return weight
    return weight.reshape(-1, weight.shape[-1]).T if weight.ndim == 2 else None


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def onnx_layer_map(proto, layers: list[ParamLayer], weights: list[dict[str, np.ndarray]]) -> dict[str, str | None]:
    """ONNX node name -> ncnn layer name for Conv/Gemm/MatMul nodes and the int8-capable layer holding
    their weights; None for a node whose weights match several layers.

    pnnx names layers by its own counters (convclip_0, conv_7, ...), so names cannot be carried over:
    weights are matched instead, row by row up to a scale per output channel (pnnx folds BatchNorm
    and constant Mul into them), and a node maps only when exactly one layer matches."""
    consts = _onnx_weights(proto)
    candidates = []
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in consts:
            rows = _onnx_rows(node, consts[node.input[1]].astype(np.float64))
            if rows is not None and node.name:
                candidates.append((node.name, _unit_rows(rows)))
    found: dict[str, list[str]] = {}
    for layer, slots in zip(layers, weights):
        if layer.type not in QUANTIZABLE or "weight" not in slots or slots["weight"].dtype != np.float32:
            continue
        rows = _unit_rows(slots["weight"].astype(np.float64).reshape(layer.get(0), -1))
        for name, ref in candidates:
            if ref.shape != rows.shape:
                continue
            # |cosine| ~ 1 per row, or both rows zero (a dead channel)
            agree = np.abs((ref * rows).sum(axis=1)) > 0.999
            dead = ~ref.any(axis=1) & ~rows.any(axis=1)
            if np.all(agree | dead):
                found.setdefault(name, []).append(layer.name)
    return {node: names[0] if len(names) == 1 else None for node, names in found.items()}


def resolve_exclude(exclude: list[str], layers: list[ParamLayer], onnx_map: dict[str, str | None],
                    onnx_nodes: set[str]) -> set[str]:
    """ncnn layer names to keep in float, from ncnn layer names or ONNX node names. A node whose
    weights no int8-capable layer holds (pnnx made it a Gemm or MultiHeadAttention, which run in
    float) or that has no weights at all is float already: nothing to do."""
    quantizable = {layer.name for layer in layers if layer.type in QUANTIZABLE}
    names = set()
    for n in exclude:
        if n in quantizable:
            names.add(n)
        elif onnx_map.get(n):
            names.add(onnx_map[n])
        elif n in onnx_map:
            raise ConversionError(
                f"ncnn int8: the weights of ONNX node {n!r} match several ncnn layers; exclude it by its ncnn "
                f"layer name instead (int8-capable layers: {sorted(quantizable)})"
            )
        elif n not in onnx_nodes:
            raise ConversionError(
                f"ncnn int8: cannot exclude {n!r}: no such ONNX node or ncnn layer "
                f"(int8-capable ncnn layers: {sorted(quantizable)[:8]}{' ...' if len(quantizable) > 8 else ''})"
            )
    return names


# ---------------------------------------------------------------------------------------- driver


def check_options(feeds, method: str, exclude, inputs: list[TensorInfo]) -> list[dict[str, np.ndarray]]:
    """The calibration feeds, checked against the model's inputs (names, dtype, shape) one by one,
    with the method and exclude list: everything a caller can get wrong, before any conversion runs."""
    from edgesdk.backends.base import check_feeds

    if method not in METHODS:
        raise ConversionError(f"ncnn int8: calibration method {method!r} is not one of {METHODS}")
    if isinstance(exclude, str) or not all(isinstance(n, str) for n in exclude):
        raise ConversionError(f"ncnn int8: exclude must be a list of ONNX node or ncnn layer names, got {exclude!r}")
    if feeds is None or (isinstance(feeds, (list, tuple)) and not feeds):
        raise ConversionError(
            "ncnn int8 needs calibration feeds: ConvertOptions.calibration is empty; give a list of feed "
            "dicts (ONNX input name -> preprocessed array), e.g. ~100 real images through the target's preprocessing"
        )
    if not isinstance(feeds, (list, tuple)):
        raise ConversionError(f"ncnn int8: calibration must be a list of feed dicts, got {type(feeds).__name__}")
    for i, feed in enumerate(feeds):
        check_feeds(inputs, feed, f"calibration sample {i}")
    return list(feeds)


def _consumers(layers: list[ParamLayer]) -> dict[str, list[ParamLayer]]:
    found: dict[str, list[ParamLayer]] = {}
    for layer in layers:
        for b in layer.inputs:
            found.setdefault(b, []).append(layer)
    return found


def _final_consumers(blob: str, consumers: dict[str, list[ParamLayer]]) -> list[ParamLayer]:
    """The layers reading `blob`, looking through Split (which hands the same data on)."""
    out = []
    for layer in consumers.get(blob, []):
        if layer.type == "Split":
            out += [c for o in layer.outputs for c in _final_consumers(o, consumers)]
        else:
            out.append(layer)
    return out


def _split_source(layers: list[ParamLayer]) -> dict[str, str]:
    """Split output blob -> the blob it copies (followed to the first non-Split producer)."""
    src = {}
    for layer in layers:
        if layer.type == "Split":
            for o in layer.outputs:
                src[o] = src.get(layer.inputs[0], layer.inputs[0])
    return src


def quantize(fp32: Artifact, proto, feeds: list[dict[str, np.ndarray]], method: str = "kl", exclude=(),
             requantize: bool = True, bias_correction: bool = True, threads: int = 1) -> dict:
    """Rewrite an fp32 ncnn artifact's param/bin in place as ncnn int8; returns its artifact meta entry.

    feeds: checked calibration feeds (check_options); proto: the ONNX model converted, used only to
    resolve ONNX node names in `exclude`; requantize: int8 outputs between int8 convolutions;
    bias_correction: fold the mean output shift int8 weights cause on the calibration data into the bias;
    threads: ncnn's threads for the calibration runs. One by default: copying ~50 blobs out per sample
    dominates anyway, and on a busy machine ncnn's OpenMP threads made calibration 10x slower (measured:
    30 images 2.2 s on one thread, 25-28 s on two with a load average of 3.6 on 2 cores)."""
    from edgesdk.backends.ncnn.session import NcnnSession

    if method not in METHODS:
        raise ConversionError(f"ncnn int8: calibration method {method!r} is not one of {METHODS}")
    param_path, bin_path = fp32.path(fp32.meta["param"]), fp32.path(fp32.meta["bin"])
    layers = read_param(param_path.read_text(), str(param_path))
    weights = read_bin(layers, bin_path.read_bytes(), str(bin_path))
    for layer in layers:
        if layer.type in QUANTIZABLE and layer.get(8):
            raise ConversionError(f"{param_path}: layer {layer.name!r} is already int8")

    onnx_map = onnx_layer_map(proto, layers, weights) if proto is not None else {}
    onnx_nodes = {n.name for n in proto.graph.node} if proto is not None else set()
    excluded = resolve_exclude(list(exclude), layers, onnx_map, onnx_nodes)
    targets = [
        (layer, slots) for layer, slots in zip(layers, weights)
        if _int8_capable(layer, slots) and layer.name not in excluded
    ]
    # A Split hands its input on unchanged: calibrate the blob once, under its producer's name.
    source = _split_source(layers)
    blob_of = {layer.name: source.get(layer.inputs[0], layer.inputs[0]) for layer, _ in targets}
    position = {b: i for i, layer in enumerate(layers) for b in layer.outputs}
    with NcnnSession(fp32, threads=threads) as session:
        stats = calibrate(session, feeds, sorted(set(blob_of.values()), key=position.get, reverse=True))

    scales = {}
    for layer, slots in targets:
        blob = stats[blob_of[layer.name]]
        scales[layer.name] = _quantize_layer(layer, slots, blob, method, bias_correction)
    fused = _fuse_requantize(layers, weights, scales, {m["blob"] for m in fp32.meta["outputs"].values()}) if requantize else set()

    data = write_bin(layers, weights)
    # The encoding must read back as written (sizes, tags, padding) before it replaces the fp32 files.
    back = read_bin(layers, data, "int8 weights")
    for layer, want, got in zip(layers, weights, back):
        for slot, a in want.items():
            if not np.array_equal(np.asarray(a).ravel(), got[slot]):
                raise ConversionError(f"ncnn int8: {slot} of layer {layer.name!r} does not read back as written")
    write_bytes(param_path, format_param(layers).encode())
    write_bytes(bin_path, data)

    node_of = {layer: node for node, layer in onnx_map.items() if layer}
    return {
        "method": method,
        "calibration_samples": len(feeds),
        "bias_correction": bias_correction,
        "bin_size": len(data),
        "excluded": sorted(excluded),
        "layers": {
            name: {"onnx": node_of.get(name), "input_scale": scale, "requantize": name in fused}
            for name, scale in scales.items()
        },
    }


def _int8_capable(layer: ParamLayer, slots: dict[str, np.ndarray]) -> bool:
    """A Convolution / ConvolutionDepthWise / InnerProduct with constant weights whose padding, if
    any, is zeros: ncnn pads an int8 input with the raw pad value, unscaled."""
    if layer.type not in QUANTIZABLE or "weight" not in slots or len(layer.inputs) != 1:
        return False
    try:
        return layer.type == "InnerProduct" or float(layer.params.get(18, "0")) == 0.0
    except ValueError:
        return False


def _quantize_layer(layer: ParamLayer, slots: dict[str, np.ndarray], blob: BlobStats, method: str,
                    bias_correction: bool) -> float:
    """Turn one layer's slots and params into ncnn int8 (int8_scale_term 1); returns its input scale."""
    groups = layer.get(7, 1) if layer.type == "ConvolutionDepthWise" else layer.get(0)
    weight = slots["weight"]
    ws = weight_scales(weight, groups, weight_levels(layer))
    slots["weight"] = quantize_weights(weight, ws)
    slots["weight_scales"] = ws
    shift = bias_shift(layer, weight, slots["weight"], ws, blob.channel_mean) if bias_correction else None
    if shift is not None:
        bias = slots.get("bias", np.zeros(layer.get(0), np.float32))
        slots["bias"] = (bias - shift).astype(np.float32)
        layer.params[1 if layer.type == "InnerProduct" else 5] = "1"  # bias_term
    scale = input_scale(blob.threshold(method))
    slots["input_scale"] = np.array([scale], np.float32)
    layer.params[8] = "1"
    return scale


def _fuse_requantize(layers: list[ParamLayer], weights: list[dict[str, np.ndarray]], scales: dict[str, float],
                     outputs: set[str]) -> set[str]:
    """int8_scale_term 101 (int8 output at the consumers' input scale) on each int8 convolution whose
    output, directly or through Split, feeds int8 convolutions only; returns their names."""
    consumers = _consumers(layers)
    fused = set()
    for layer, slots in zip(layers, weights):
        if layer.name not in scales or layer.type not in REQUANTIZE_LAYERS or layer.outputs[0] in outputs:
            continue
        readers = _final_consumers(layer.outputs[0], consumers)
        if not readers or not all(r.type in REQUANTIZE_LAYERS and r.name in scales for r in readers):
            continue
        out_scales = {scales[r.name] for r in readers}
        if len(out_scales) == 1:  # always, as the readers see one blob; checked all the same
            slots["output_scale"] = np.array([out_scales.pop()], np.float32)
            layer.params[8] = "101"
            fused.add(layer.name)
    return fused
