"""ncnn's model files as data: the text .param (layers, blobs, params) and the .bin weights in the
order each layer's load_model reads them. The one .param reader of the project (session, converter,
int8 writer and compat all read through it). numpy only.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from edgesdk.errors import ConversionError

QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")  # layers ncnn runs in int8
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


def read_param(text: str, source: str = "model.param", error: type[Exception] = ConversionError) -> list[ParamLayer]:
    """The layers of a text .param file; `error` (ConversionError on the build side, ModelError for a
    bundle's file) names the line that is not an ncnn layer."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise error(f"{source}: not a text ncnn param file (first line is not {PARAM_MAGIC})")
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
            raise error(f"{source}:{n}: not an ncnn layer line: {line.strip()!r}") from None
        if len(blobs) != n_in + n_out or n_in < 0 or n_out < 0:
            raise error(f"{source}:{n}: layer {parts[1]!r} names fewer blobs than it declares")
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
