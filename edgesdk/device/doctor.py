"""`edgesdk doctor`: what a new board has (device.board), which engines are installed and which are
built into edgesdk._native, and whether each runs a tiny known model as numpy computes it.

The tiny model (Conv 3x3 + Relu, global average pool, Gemm: x[1,3,8,8] -> y[1,5]) is written here with
numpy alone, as ONNX protobuf bytes and as an ncnn .param/.bin, from weights given by a formula: a board
may have no onnx package (it is build side), and nothing is stored that could drift from the code.
The numpy reference computes the same function; every engine present must match it within ATOL.
"""
from __future__ import annotations

import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from edgesdk.backends.base import Artifact, TensorInfo, first_line

ATOL = 1e-4  # fp32 engines on a 3x8x8 input: float rounding only
ENGINES = ("onnxruntime", "openvino", "ncnn", "tensorrt")
X_SHAPE, Y_SHAPE = (1, 3, 8, 8), (1, 5)


def weights() -> dict[str, np.ndarray]:
    def wave(n, k):
        return (0.5 * np.sin(np.arange(n, dtype=np.float64) * k)).astype(np.float32)

    return {"conv_w": wave(108, 0.7).reshape(4, 3, 3, 3), "conv_b": wave(4, 1.3), "fc_w": wave(20, 0.9).reshape(5, 4),
            "fc_b": wave(5, 2.1)}


def sample_input() -> np.ndarray:
    return np.cos(np.arange(192, dtype=np.float64) * 0.3).astype(np.float32).reshape(X_SHAPE)


def reference(x: np.ndarray) -> np.ndarray:
    """The model in numpy (float64 accumulation)."""
    w = weights()
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    conv = np.zeros((x.shape[0], 4, h, wd))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w["conv_w"][:, :, i, j])
    act = np.maximum(conv + w["conv_b"][None, :, None, None], 0)
    return (act.mean(axis=(2, 3)) @ w["fc_w"].T + w["fc_b"]).astype(np.float32)


# ---------------------------------------------------------------------------- ONNX as protobuf bytes

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value) -> bytes:
    """One protobuf field: ints as varints, bytes/str/nested messages length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, a: np.ndarray) -> bytes:  # TensorProto: dims 1, data_type 2 (FLOAT = 1), name 8, raw 9
    return b"".join(_field(1, d) for d in a.shape) + _field(2, 1) + _field(8, name) + \
        _field(9, np.ascontiguousarray(a, "<f4").tobytes())


def _value_info(name: str, shape) -> bytes:  # ValueInfoProto -> TypeProto.tensor_type -> shape.dim.dim_value
    dims = b"".join(_field(1, _field(1, d)) for d in shape)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, dims)))


def _attr(name: str, value) -> bytes:  # AttributeProto: name 1, i 3, ints 8, type 20 (INT 2, INTS 7)
    if isinstance(value, int):
        return _field(1, name) + _field(3, value) + _field(20, 2)
    return _field(1, name) + b"".join(_field(8, v) for v in value) + _field(20, 7)


def _node(op: str, inputs, outputs, **attrs) -> bytes:  # NodeProto: input 1, output 2, name 3, op_type 4, attr 5
    return (b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(3, op.lower())
            + _field(4, op) + b"".join(_field(5, _attr(k, v)) for k, v in attrs.items()))


def onnx_bytes() -> bytes:
    """The tiny model as an ONNX file (opset 13, IR 7)."""
    w = weights()
    nodes = [_node("Conv", ["x", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             _node("Relu", ["c"], ["r"]), _node("GlobalAveragePool", ["r"], ["p"]),
             _node("Flatten", ["p"], ["f"], axis=1),
             _node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1)]
    graph = (b"".join(_field(1, n) for n in nodes) + _field(2, "edgesdk_doctor")
             + b"".join(_field(5, _tensor(k, v)) for k, v in w.items())
             + _field(11, _value_info("x", X_SHAPE)) + _field(12, _value_info("y", Y_SHAPE)))
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 7) + _field(2, "edgesdk doctor") + _field(7, graph) + _field(8, opset)


def ncnn_files() -> tuple[str, bytes]:
    """The same model as ncnn's text .param and .bin (weights behind a 4-byte float32 tag; biases raw)."""
    w = weights()
    param = ("7767517\n5 5\n"
             "Input            in0   0 1 in0 0=8 1=8 2=3\n"
             "Convolution      conv  1 1 in0 c0 0=4 1=3 3=1 4=1 5=1 6=108 9=1\n"
             "Pooling          gap   1 1 c0 p0 0=1 4=1\n"
             "Flatten          flat  1 1 p0 f0\n"
             "InnerProduct     fc    1 1 f0 out0 0=5 1=1 2=20\n")
    tag = struct.pack("<I", 0)
    data = tag + w["conv_w"].tobytes() + w["conv_b"].tobytes() + tag + w["fc_w"].tobytes() + w["fc_b"].tobytes()
    return param, data


# ---------------------------------------------------------------------------- artifacts and runs

IO = ([TensorInfo("x", X_SHAPE, "float32")], [TensorInfo("y", Y_SHAPE, "float32")])


def artifact(engine: str, root: Path) -> Artifact:
    """The tiny model as `engine`'s artifact, written with that engine's runtime only."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(onnx_bytes())
    files, meta = ["model.onnx"], {}
    if engine == "ncnn":
        param, data = ncnn_files()
        (root / "model.param").write_text(param)
        (root / "model.bin").write_bytes(data)
        files = ["model.param", "model.bin"]
        meta = {"param": "model.param", "bin": "model.bin", "inputs": {"x": {"blob": "in0", "batch_axis": 0}},
                "outputs": {"y": {"blob": "out0", "batch_axis": 0}}}
    elif engine == "openvino":
        import openvino as ov

        ov.save_model(ov.Core().read_model(str(root / "model.onnx")), str(root / "model.xml"), compress_to_fp16=False)
        files = ["model.xml", "model.bin"]
    elif engine == "tensorrt":
        import hashlib
        import json

        from edgesdk.backends.tensorrt.config import BUILD_FILE, BuildConfig

        config = BuildConfig(precision="fp32", onnx_sha256=hashlib.sha256(onnx_bytes()).hexdigest())
        (root / BUILD_FILE).write_text(json.dumps(config.to_dict(), indent=2))
        files = ["model.onnx", BUILD_FILE]
    a = Artifact(backend=engine, precision="fp32", root=root, files=files, inputs=IO[0], outputs=IO[1], meta=meta)
    a.save()
    return a


def check(engine: str, root: Path, native: bool) -> dict:
    """Run the tiny model on `engine` (edgesdk._native's engine or the Python session) against numpy."""
    from edgesdk.device.runtime import open_session

    row = {"engine": engine, "runner": "native" if native else "python", "ok": False, "max_abs": None,
           "seconds": None, "error": None}
    x = sample_input()
    t = time.perf_counter()
    try:
        session, _ = open_session(artifact(engine, root), native=native)
        with session:
            y = np.asarray(session.run({"x": x})["y"], dtype=np.float32)
    except Exception as e:  # a board's broken engine is a finding to report, not a crash
        row["error"] = f"{type(e).__name__}: {first_line(e)}"
        return row
    row["seconds"] = round(time.perf_counter() - t, 3)
    if y.shape != Y_SHAPE:
        row["error"] = f"output shape {list(y.shape)}, expected {list(Y_SHAPE)}"
        return row
    row["max_abs"] = float(np.abs(y - reference(x)).max())
    row["ok"] = row["max_abs"] <= ATOL
    return row


def engines() -> tuple[list[dict], dict]:
    """(installed engines with version or the reason they are not usable, edgesdk._native's engines)."""
    from edgesdk.backends import registry
    from edgesdk.device.native import native_engine_version, native_module
    from edgesdk.device.runtime import engine_version

    rows = []
    for name in ENGINES:
        reason = registry.get(name).available()
        rows.append({"name": name, "available": reason is None, "version": engine_version(name) if reason is None
                     else None, "reason": reason})
    mod = native_module()
    native = {"available": mod is not None, "engines": sorted(mod.engines()) if mod is not None else [],
              "versions": {}}
    native["versions"] = {e: native_engine_version(e) for e in native["engines"]}
    return rows, native


def run() -> dict:
    """Everything doctor reports, with stable keys (the --json output)."""
    from edgesdk._version import __version__
    from edgesdk.device.board import detect

    installed, native = engines()
    checks = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-doctor-") as tmp:
        for e in installed:
            if e["available"]:
                checks.append(check(e["name"], Path(tmp) / e["name"], native=False))
        for name in native["engines"]:
            checks.append(check(name, Path(tmp) / f"native-{name}", native=True))
    return {"edgesdk": __version__, "platform": detect(), "engines": installed, "native": native,
            "model": {"name": "conv3x3-relu-gap-gemm", "input": list(X_SHAPE), "output": list(Y_SHAPE), "atol": ATOL},
            "checks": checks, "ok": bool(checks) and all(c["ok"] for c in checks)}


def format_report(r: dict) -> str:
    p, j = r["platform"], r["platform"]["jetson"]
    board = p["board"]["model"] or f"{p['system']} {p['machine']} (no device tree)"
    features = p["cpu"]["features"]
    lines = [f"edgesdk {r['edgesdk']} on {board}, Python {p['python']}",
             f"cpu      {p['cpu']['model'] or '?'}, {p['cpu']['cores']} cores; features: "
             + (", ".join(k for k, v in features.items() if v) or "none of " + ", ".join(features))]
    if p["board"]["kind"] == "jetson" or any(j.values()):
        lines.append("jetson   " + ", ".join(f"{k} {v or '-'}" for k, v in j.items()))
    lines.append(f"native   edgesdk._native: {', '.join(r['native']['engines']) or 'no engines'}"
                 if r["native"]["available"] else "native   edgesdk._native is not built")
    lines.append(f"{'engine':<13}{'installed':<30}{'runner':<8}{'max |diff|':<12}result")
    for e in r["engines"]:
        runs = [c for c in r["checks"] if c["engine"] == e["name"]] or [None]
        for c in runs:
            have = e["version"] or ("yes" if e["available"] else "no")
            if c is None:
                lines.append(f"{e['name']:<13}{have:<30}{'-':<8}{'-':<12}{first_line(e['reason'] or '')[:60]}")
                continue
            diff = "-" if c["max_abs"] is None else f"{c['max_abs']:.1e}"
            result = "ok" if c["ok"] else (c["error"] or f"MISMATCH (atol {ATOL})")
            lines.append(f"{e['name']:<13}{have:<30}{c['runner']:<8}{diff:<12}{result}")
    lines.append("all engines present match numpy" if r["ok"] else "SOME ENGINE FAILED: see the rows above")
    return "\n".join(lines)
