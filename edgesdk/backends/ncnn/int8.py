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

import struct
from dataclasses import dataclass

import numpy as np

from ...atomic import write_bytes
from ...errors import ConversionError
from ..base import Artifact, TensorInfo

METHODS = ("kl", "minmax", "aciq")
QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
# Producers and consumers of a requantized int8 blob: the layers whose x86/arm kernels take int8 input.
REQUANTIZE_LAYERS = ("Convolution", "ConvolutionDepthWise")
INT8_MAX = 127
HIST_BINS = 2048
KL_TARGET_BINS = 128
# Optimal clipping threshold / Laplace scale b for 8-bit uniform quantization (Banner et al., ACIQ, 2019).
ACIQ_LAPLACE_ALPHA = 9.89
PARAM_MAGIC = "7767517"

# ncnn's 4-byte tags in front of a weight blob read with load type 0 (src/modelbin.cpp)
TAG_FP16 = 0x01306B47
TAG_BF16 = 0x01348B83
TAG_INT8 = 0x000D4B38
TAG_FP32 = 0x0002C056  # fp32 behind a tag; all-zero tag bytes also mean fp32

# conv-like layer type -> param id of its dynamic_weight flag (None: the layer has none)
_CONV_LIKE = {
    "Convolution": 19, "ConvolutionDepthWise": 19, "Convolution1D": 19, "ConvolutionDepthWise1D": 19,
    "Convolution3D": None, "ConvolutionDepthWise3D": None,
    "Deconvolution": 28, "DeconvolutionDepthWise": 28, "Deconvolution1D": 28, "DeconvolutionDepthWise1D": 28,
    "Deconvolution3D": None, "DeconvolutionDepthWise3D": None,
}
# Layers with weights whose layout this writer does not reproduce.
_UNSUPPORTED = ("DeformableConv2D", "Quantize", "Dequantize", "Requantize")


# ---------------------------------------------------------------------------------------- param file


@dataclass
class ParamLayer:
    """One line of a text .param file; params keep the file's keys and value text in order."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, str]

    def get(self, key: int, default: int = 0) -> int:
        text = self.params.get(key)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise ConversionError(f"ncnn layer {self.name!r} ({self.type}): param {key}={text} is not an integer") from None

    def line(self) -> str:
        fields = [f"{self.type:<24}", f"{self.name:<24}", str(len(self.inputs)), str(len(self.outputs)),
                  *self.inputs, *self.outputs, *(f"{k}={v}" for k, v in self.params.items())]
        return " ".join(fields)


def read_param(text: str, source: str = "model.param") -> list[ParamLayer]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise ConversionError(f"{source}: not a text ncnn param file (first line is not {PARAM_MAGIC})")
    layers = []
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        try:
            n_in, n_out = int(parts[2]), int(parts[3])
            blobs = parts[4 : 4 + n_in + n_out]
            params = {int(k): v for k, v in (p.split("=", 1) for p in parts[4 + n_in + n_out :])}
        except (IndexError, ValueError):
            raise ConversionError(f"{source}:{n}: not an ncnn layer line: {line.strip()!r}") from None
        if len(blobs) != n_in + n_out:
            raise ConversionError(f"{source}:{n}: layer {parts[1]!r} names fewer blobs than it declares")
        layers.append(ParamLayer(parts[0], parts[1], blobs[:n_in], blobs[n_in:], params))
    return layers


def format_param(layers: list[ParamLayer]) -> str:
    blobs = {b for layer in layers for b in layer.outputs}
    return "\n".join([PARAM_MAGIC, f"{len(layers)} {len(blobs)}", *(layer.line() for layer in layers)]) + "\n"


# ---------------------------------------------------------------------------------------- bin file


def weight_slots(layer: ParamLayer) -> list[tuple[str, int, int]]:
    """(slot, element count, ncnn load type) in the order the layer's load_model reads the .bin.

    Load type 0 is a blob behind a 4-byte encoding tag, type 1 plain fp32."""
    t, g = layer.type, layer.get
    if t in _UNSUPPORTED:
        raise ConversionError(f"ncnn int8: layer {layer.name!r} is a {t}, whose weights this writer does not handle")
    if t in _CONV_LIKE:
        dynamic = _CONV_LIKE[t]
        if dynamic is not None and g(dynamic):
            return []  # weights arrive as a second input blob
        slots = [("weight", g(6), 0)] + ([("bias", g(0), 1)] if g(5) else [])
    elif t == "InnerProduct":
        slots = [("weight", g(2), 0)] + ([("bias", g(0), 1)] if g(1) else [])
    elif t == "BatchNorm":
        slots = [(s, g(0), 1) for s in ("slope", "mean", "var", "bias")]
    elif t in ("Bias", "PReLU"):
        slots = [("data", g(0), 1)]
    elif t == "Scale":
        if g(0) == -233:  # scale given as a second input blob
            return []
        slots = [("scale", g(0), 1)] + ([("bias", g(0), 1)] if g(1) else [])
    elif t in ("LayerNorm", "InstanceNorm"):
        slots = [("gamma", g(0), 1), ("beta", g(0), 1)] if g(2, 1) else []
    elif t == "GroupNorm":
        slots = [("gamma", g(1), 1), ("beta", g(1), 1)] if g(3, 1) else []
    elif t == "RMSNorm":
        slots = [("gamma", g(0), 1)] if g(2, 1) else []
    elif t == "Normalize":
        slots = [("scale", g(3), 1)]
    elif t == "Padding":
        slots = [("pad", g(6), 1)] if g(6) else []
    elif t == "Embed":
        if g(18):
            raise ConversionError(f"ncnn int8: layer {layer.name!r} (Embed) is already quantized")
        slots = [("weight", g(3), 0)] + ([("bias", g(0), 1)] if g(2) else [])
    elif t == "MemoryData":
        w, h, d, c, kind = g(0), g(1), g(11), g(2), g(21, 1)
        if kind not in (0, 1):
            raise ConversionError(f"ncnn int8: MemoryData {layer.name!r} holds load type {kind}, not float data")
        size = w * h * d * c if d else w * h * c if c else w * h if h else w
        slots = [("data", size, kind)]
    elif t == "Gemm":
        if g(18):
            raise ConversionError(f"ncnn int8: layer {layer.name!r} (Gemm) is already quantized")
        m, n, k = g(7), g(8), g(9)
        slots = ([("A", m * k, 0)] if g(4) else []) + ([("B", n * k, 0)] if g(5) else [])
        c_size = {0: 1, 1: m, 2: m, 3: n * m, 4: n}.get(g(10))
        if g(6) and c_size is not None:
            slots.append(("C", c_size, 0))
    elif t == "MultiHeadAttention":
        if g(18):
            raise ConversionError(f"ncnn int8: layer {layer.name!r} (MultiHeadAttention) is already quantized")
        e = g(0)
        q, k, v = g(2) // max(e, 1), g(3, e), g(4, e)
        slots = [("q_weight", e * q, 0), ("q_bias", e, 1), ("k_weight", e * k, 0), ("k_bias", e, 1),
                 ("v_weight", e * v, 0), ("v_bias", e, 1), ("out_weight", q * e, 0), ("out_bias", q, 1)]
    elif t in ("RNN", "LSTM", "GRU"):
        if g(8):
            raise ConversionError(f"ncnn int8: layer {layer.name!r} ({t}) is already quantized")
        n, dirs = g(0), 2 if g(2) == 2 else 1
        hidden = g(3, n) if t == "LSTM" else n
        gates, bias_rows = {"RNN": (1, 1), "LSTM": (4, 4), "GRU": (3, 4)}[t]
        slots = [("weight_xc", g(1), 0), ("bias_c", hidden * bias_rows * dirs, 0),
                 ("weight_hc", n * hidden * gates * dirs, 0)]
        if t == "LSTM" and n != hidden:
            slots.append(("weight_hr", hidden * n * dirs, 0))
    else:
        return []  # every other ncnn layer reads no weights
    term = g(8) if t in QUANTIZABLE else 0
    if term:
        if t != "ConvolutionDepthWise":
            groups = g(0)
        else:  # term 1/101: a scale per group; 2/102: one for all
            groups = g(7, 1) if term % 100 == 1 else 1
        slots += [("weight_scales", groups, 1), ("input_scale", 1, 1)]
        if term > 100:
            slots.append(("output_scale", 1, 1))
    if any(count < 0 for _, count, _ in slots):
        raise ConversionError(f"ncnn int8: layer {layer.name!r} ({t}) declares a negative weight size")
    return slots


def _pad4(n: int) -> int:
    return (n + 3) // 4 * 4


def read_bin(layers: list[ParamLayer], data: bytes, source: str = "model.bin") -> list[dict[str, np.ndarray]]:
    """Every layer's weights as arrays (float32, or int8 for int8-tagged blobs), checking the file
    holds exactly what the param file declares: a bin of another model or build fails here."""
    pos = 0
    out = []

    def take(n: int, layer: ParamLayer, slot: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ConversionError(
                f"{source}: ends at byte {len(data)} inside {slot} of layer {layer.name!r} ({layer.type}); "
                "the weight file does not match the param file"
            )
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    for layer in layers:
        slots = {}
        for slot, count, kind in weight_slots(layer):
            if kind == 1:
                slots[slot] = np.frombuffer(take(4 * count, layer, slot), "<f4").astype(np.float32)
                continue
            raw = take(4, layer, slot)
            (tag,) = struct.unpack("<I", raw)
            if tag == TAG_INT8:
                slots[slot] = np.frombuffer(take(_pad4(count), layer, slot), np.int8)[:count].copy()
            elif tag == TAG_FP16:
                slots[slot] = np.frombuffer(take(_pad4(2 * count), layer, slot), "<f2")[:count].astype(np.float32)
            elif tag == TAG_BF16:
                bits = np.frombuffer(take(_pad4(2 * count), layer, slot), "<u2")[:count].astype(np.uint32) << 16
                slots[slot] = bits.view(np.float32)
            elif tag == TAG_FP32 or tag == 0:
                slots[slot] = np.frombuffer(take(4 * count, layer, slot), "<f4").astype(np.float32)
            else:  # ncnn's 256-entry lookup table followed by one index byte per weight
                table = np.frombuffer(take(256 * 4, layer, slot), "<f4")
                index = np.frombuffer(take(_pad4(count), layer, slot), np.uint8)[:count]
                slots[slot] = table[index].astype(np.float32)
        out.append(slots)
    if pos != len(data):
        raise ConversionError(
            f"{source}: the param file's layers read {pos} bytes, the file has {len(data)}; "
            "the weight file does not match the param file"
        )
    return out


def write_bin(layers: list[ParamLayer], weights: list[dict[str, np.ndarray]]) -> bytes:
    parts = []
    for layer, slots in zip(layers, weights):
        for slot, count, kind in weight_slots(layer):
            a = slots[slot]
            if a.size != count:
                raise ConversionError(f"ncnn int8: {slot} of layer {layer.name!r} has {a.size} values, the param says {count}")
            if kind == 1:
                parts.append(a.astype("<f4").tobytes())
            elif a.dtype == np.int8:
                parts += [struct.pack("<I", TAG_INT8), a.tobytes(), bytes(_pad4(count) - count)]
            else:
                parts += [bytes(4), a.astype("<f4").tobytes()]
    return b"".join(parts)


# ---------------------------------------------------------------------------------------- scales


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


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def kl_threshold(hist: np.ndarray, bin_width: float, target: int = KL_TARGET_BINS) -> float:
    """The |x| threshold minimising KL(P || Q): P the histogram clipped at the threshold (outliers
    added to its last bin), Q the kept bins merged into `target` levels and spread back evenly over
    the bins P has mass in. Computed for every candidate at once from prefix sums."""
    h = np.asarray(hist, dtype=np.float64)
    total = h.sum()
    if total <= 0 or len(h) <= target:
        return len(h) * bin_width
    kept = np.arange(target, len(h) + 1)  # candidate numbers of kept bins
    csum = np.concatenate([[0.0], np.cumsum(h)])
    nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    tail = total - csum[kept]
    last = h[kept - 1]
    # sum of p log p over P's bins, the last one holding the clipped tail
    p_entropy = hlogh[kept] - _xlogx(last) + _xlogx(last + tail)
    edges = (np.arange(target + 1)[None, :] * kept[:, None]) // target
    sums = csum[edges[:, 1:]] - csum[edges[:, :-1]]
    counts = (nonzero[edges[:, 1:]] - nonzero[edges[:, :-1]]).astype(np.float64)
    counts[:, -1] += (last == 0) & (tail > 0)  # the last bin holds mass in P through the tail alone
    level = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    p_mass = sums.copy()
    p_mass[:, -1] += tail
    # P mass where Q has none (an empty last chunk that receives the tail) is penalised, not infinite
    cross = (p_mass * np.log(np.maximum(level, 1e-12))).sum(axis=1)
    with np.errstate(divide="ignore"):
        kl = (p_entropy - cross) / total + np.log(csum[kept] / total)
    kl[csum[kept] <= 0] = np.inf
    return float(kept[int(np.argmin(kl))] * bin_width)


class BlobStats:
    """What calibration keeps of one blob over all samples: |x| range and histogram, per-channel means."""

    def __init__(self):
        self.absmax = 0.0
        self.abs_sum = 0.0
        self.count = 0
        self.channel_sum: np.ndarray | None = None
        self.samples = 0
        # |x| histogram over [0, hist_range): the range doubles (merging bin pairs) when a larger value
        # arrives, so one pass over the samples is enough and the used range stays >= half the bins
        self.hist = np.zeros(HIST_BINS, np.int64)
        self.hist_range = 0.0

    def add(self, x: np.ndarray) -> None:
        a = np.abs(x.ravel())
        peak = float(a.max(initial=0.0))
        self.absmax = max(self.absmax, peak)
        self.abs_sum += float(a.sum(dtype=np.float64))
        self.count += a.size
        # per input channel (ncnn's first axis of a c,h,w blob; each value of a flat one)
        means = x.reshape(x.shape[0], -1).mean(axis=1, dtype=np.float64) if x.ndim > 1 else x.astype(np.float64)
        self.channel_sum = means if self.channel_sum is None else self.channel_sum + means
        self.samples += 1
        if peak <= 0:
            return
        if self.hist_range == 0:
            self.hist_range = peak
        while peak > self.hist_range:
            self.hist = np.concatenate([self.hist.reshape(-1, 2).sum(axis=1), np.zeros(HIST_BINS // 2, np.int64)])
            self.hist_range *= 2
        idx = np.minimum((a * (HIST_BINS / self.hist_range)).astype(np.int64), HIST_BINS - 1)
        counts = np.bincount(idx, minlength=HIST_BINS)
        # exact zeros (ReLU outputs, padding) stay exact in int8 at any scale: counted, they would
        # swamp the first bin and blunt the threshold search (ncnn2table skips them too)
        counts[0] -= a.size - np.count_nonzero(a)
        self.hist += counts

    @property
    def channel_mean(self) -> np.ndarray:
        return self.channel_sum / max(self.samples, 1)

    def threshold(self, method: str) -> float:
        """|x| beyond which values saturate in int8."""
        if method == "minmax":
            return self.absmax
        if method == "aciq":
            # Laplace fit of x around 0, b = mean |x|; clipped at the 8-bit optimum, never beyond the data
            return min(self.absmax, ACIQ_LAPLACE_ALPHA * self.abs_sum / max(self.count, 1))
        if self.absmax <= 0:
            return 0.0
        return min(self.absmax, kl_threshold(self.hist, self.hist_range / HIST_BINS))


def calibrate(session, feeds: list[dict[str, np.ndarray]], blobs: list[str]) -> dict[str, BlobStats]:
    """Statistics of each named blob from one run of `session` (an fp32 NcnnSession) per feed."""
    stats = {b: BlobStats() for b in blobs}
    # Callers list blobs deepest first: the first extraction runs the whole net and the rest are
    # already computed (extracting shallow blobs first made ncnn take several times longer).
    for feed in feeds:
        for b, x in session.blobs(feed, blobs).items():
            stats[b].add(x)
    return stats


def input_scale(threshold: float) -> float:
    """127 / threshold; 1 for a blob that was all zeros in calibration (any scale keeps zeros exact)."""
    return float(INT8_MAX / threshold) if threshold > 0 and np.isfinite(threshold) else 1.0


# ---------------------------------------------------------------------------------------- names


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


def onnx_layer_map(proto, layers: list[ParamLayer], weights: list[dict[str, np.ndarray]]) -> dict[str, str]:
    """ONNX node name -> ncnn layer name for Conv/Gemm/MatMul nodes and the ncnn layer holding their weights.

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
    return {node: names[0] for node, names in found.items() if len(names) == 1}


def resolve_exclude(exclude: list[str], layers: list[ParamLayer], onnx_map: dict[str, str],
                    onnx_nodes: dict[str, str]) -> set[str]:
    """ncnn layer names to keep in float, from ncnn layer names or ONNX node names."""
    quantizable = {layer.name for layer in layers if layer.type in QUANTIZABLE}
    names = set()
    for n in exclude:
        if n in quantizable:
            names.add(n)
        elif n in onnx_map:
            names.add(onnx_map[n])
        elif onnx_nodes.get(n) in ("Conv", "Gemm", "MatMul"):
            raise ConversionError(
                f"ncnn int8: cannot find the ncnn layer holding the weights of ONNX node {n!r}; "
                f"exclude it by its ncnn layer name instead (int8-capable layers: {sorted(quantizable)})"
            )
        elif n not in onnx_nodes:
            raise ConversionError(
                f"ncnn int8: cannot exclude {n!r}: no such ONNX node or ncnn layer "
                f"(int8-capable ncnn layers: {sorted(quantizable)[:8]}{' ...' if len(quantizable) > 8 else ''})"
            )
        # any other ONNX node has no int8 layer in ncnn: it runs in float already
    return names


# ---------------------------------------------------------------------------------------- driver


def check_options(feeds, method: str, exclude, inputs: list[TensorInfo]) -> list[dict[str, np.ndarray]]:
    """The calibration feeds, checked against the model's inputs (names, dtype, shape) one by one,
    with the method and exclude list: everything a caller can get wrong, before any conversion runs."""
    from ..onnxruntime import check_feeds

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
    from .session import NcnnSession

    if method not in METHODS:
        raise ConversionError(f"ncnn int8: calibration method {method!r} is not one of {METHODS}")
    param_path, bin_path = fp32.path(fp32.meta["param"]), fp32.path(fp32.meta["bin"])
    layers = read_param(param_path.read_text(), str(param_path))
    weights = read_bin(layers, bin_path.read_bytes(), str(bin_path))
    for layer in layers:
        if layer.type in QUANTIZABLE and layer.get(8):
            raise ConversionError(f"{param_path}: layer {layer.name!r} is already int8")

    onnx_map = onnx_layer_map(proto, layers, weights) if proto is not None else {}
    onnx_nodes = {n.name: n.op_type for n in proto.graph.node} if proto is not None else {}
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

    node_of = {layer: node for node, layer in onnx_map.items()}
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
