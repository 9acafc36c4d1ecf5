"""TensorRT (Jetson and other NVIDIA GPUs): build config on the workstation, engine build on the device.

A TensorRT plan only runs on the TensorRT version and GPU architecture that built it, so convert()
does not build one: it writes the ONNX (`model.onnx`), the build config (`build.json`) and the
equivalent `trtexec` line (`trtexec.sh`). On the device the session builds the plan once with
TensorRT's Python API and caches it outside the bundle (plan_cache.py: ~/.cache/edgesdk/engines) as
`trt-<version>-sm<major><minor>-<device>-<hash>.plan` plus a JSON sidecar; a cached plan whose key
(TensorRT version, compute capability, device name, build config) does not match is rebuilt, never loaded.

The GPU's compute capability comes from the CUDA driver API (libcuda.so.1 through ctypes: it is
present wherever the GPU driver is, JetPack included, with a stable C ABI), else from Jetson's
/proc/device-tree; TensorRT's Python API does not expose it. Device buffers come from cuda-python
(`cuda.bindings.runtime`, formerly `cuda.cudart`, when built for the installed CUDA major) or else pycuda.

Thread-safety: a TensorRTSession has `threads` execution contexts (1 by default), each with its own
stream and buffers; run() takes a free one, so that many calls from several threads overlap. The
module imports numpy only; tensorrt, CUDA bindings and (for
convert) onnx are imported inside functions.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from edgesdk.device.bundle import sha256_file
from edgesdk.errors import ConversionError, UnsupportedOpError
from edgesdk.backends.base import PRECISIONS, Artifact, ConvertOptions, TensorInfo
from edgesdk.backends.tensorrt.config import (BUILD_FILE, MODEL_FILE, TRTEXEC_FILE, BuildConfig, _engine_options,
                                              resolve_profiles, trtexec_command, trtexec_script)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# The ops TensorRT runs in int8 from Q/DQ (its explicit quantization): their activation inputs and
# weights get Q/DQ, everything else stays float and TensorRT fuses around it.
INT8_OPS = ("Conv", "Gemm", "MatMul")
BIAS_INPUT = {"Conv": 2, "Gemm": 2}

def unsupported_ops(model) -> list[str]:
    """Ops of `model` TensorRT's ONNX parser cannot take: any op outside the ONNX domain (ai.onnx.ml,
    com.microsoft, ...; those would need a plugin) and the standard ops its support matrix marks "N"."""
    from edgesdk.build.compat_tables import TENSORRT_UNSUPPORTED
    from edgesdk.build.model import op_census

    return [op for op in op_census(model) if ":" in op or op in TENSORRT_UNSUPPORTED]


def has_qdq(model) -> bool:
    from edgesdk.build.model import op_census

    return any(op in op_census(model) for op in QDQ_OPS)


def qdq_problems(model) -> list[str]:
    """What in a Q/DQ graph TensorRT's explicit quantization does not take (empty when none): it wants
    int8 with zero point 0 (symmetric) in every Q/DQ, biases in float (int32 biases behind a
    DequantizeLinear are refused by its ONNX parser: onnx/onnx-tensorrt#850, NVIDIA/TensorRT#3360),
    and quantized weights (an initializer into DequantizeLinear) only on Conv, Gemm and MatMul."""
    from onnx import TensorProto, numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems = []
    for n in model.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        zp = init.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None and (zp.data_type != TensorProto.INT8 or numpy_helper.to_array(zp).any()):
            kind, values = TensorProto.DataType.Name(zp.data_type).lower(), numpy_helper.to_array(zp).ravel()[:4]
            problems.append(f"{n.op_type} {n.name!r}: zero point must be int8 0 (symmetric), got {kind} {values}")
        elif zp is None and n.op_type == "QuantizeLinear":
            problems.append(f"QuantizeLinear {n.name!r}: no zero point, which makes it uint8; TensorRT needs int8")
        if n.op_type != "DequantizeLinear" or n.input[0] not in init:
            continue
        weights = init[n.input[0]]
        if weights.data_type != TensorProto.INT8:
            problems.append(f"DequantizeLinear {n.name!r}: {weights.name!r} is "
                            f"{TensorProto.DataType.Name(weights.data_type).lower()}; TensorRT takes int8 weights "
                            "(keep biases float)")
        for c in consumers.get(n.output[0], []):
            if c.op_type not in INT8_OPS:
                problems.append(f"DequantizeLinear {n.name!r}: quantized weights feed {c.op_type} {c.name!r}; "
                                f"TensorRT quantizes weights of {', '.join(INT8_OPS)} only")
            elif list(c.input).index(n.output[0]) == BIAS_INPUT.get(c.op_type):
                problems.append(f"DequantizeLinear {n.name!r}: the bias of {c.op_type} {c.name!r} is quantized; "
                                "TensorRT's parser needs it float")
    return problems


def onnx_io(model) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The model's inputs as declared and its outputs after shape inference (fills dims an exporter left out)."""
    from edgesdk.build.model import graph_inputs, infer_shapes, io_dicts

    outputs = infer_shapes(model).graph.output
    return ([TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(model))],
            [TensorInfo.from_dict(d) for d in io_dicts(outputs)])


def _plain_tensor_types(infos: list[TensorInfo]) -> list[str]:
    """I/O TensorRT has no type for: strings, sequences, maps."""
    return [f"{t.name} ({t.dtype})" for t in infos if t.dtype == "object" or "(" in t.dtype]


def write_build_files(directory: Path, model: Path, config: BuildConfig) -> list[str]:
    """Copy the ONNX and write build.json and trtexec.sh into `directory`; returns their names."""
    shutil.copyfile(model, directory / config.onnx)
    (directory / BUILD_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    script = directory / TRTEXEC_FILE
    script.write_text(trtexec_script(config))
    script.chmod(0o755)
    return [config.onnx, BUILD_FILE, TRTEXEC_FILE]


def build_config(model: Path, options: ConvertOptions | None = None) -> BuildConfig:
    """Check the ONNX for TensorRT and derive the build config convert() would write."""
    return prepare(Path(model), options or ConvertOptions())[0]


def prepare(model: Path, options: ConvertOptions):
    from edgesdk.build.model import load_model

    if options.precision not in PRECISIONS:
        raise ConversionError(f"tensorrt backend: unknown precision {options.precision!r}; "
                              f"choose one of {', '.join(PRECISIONS)}")
    proto = load_model(model)
    bad = unsupported_ops(proto)
    if bad:
        raise UnsupportedOpError("tensorrt", bad, f"{model}: TensorRT's ONNX parser has no import for them")
    inputs, outputs = onnx_io(proto)
    bad_io = _plain_tensor_types(inputs + outputs)
    if bad_io:
        raise UnsupportedOpError("tensorrt", bad_io, f"{model}: TensorRT I/O must be plain numeric tensors")
    if options.precision == "int8" and not has_qdq(proto) and not options.calibration:
        raise ConversionError(
            f"{model}: int8 for TensorRT needs a quantized (Q/DQ) ONNX with QuantizeLinear/DequantizeLinear "
            "nodes, and this model has none; give calibration images to quantize it, or build fp16")
    problems = qdq_problems(proto) if options.precision == "int8" else []
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConversionError(f"{model}: TensorRT cannot build this Q/DQ model: {'; '.join(problems[:3])}{more}; "
                              "quantize it from the float model with calibration images instead")
    if any(t.data_location == 1 for t in proto.graph.initializer):  # TensorProto.EXTERNAL
        raise ConversionError(f"{model}: weights in external data files are not supported by this backend yet")
    config = BuildConfig(
        precision=options.precision,
        onnx_sha256=sha256_file(model),
        profiles=resolve_profiles(inputs, options, model),
        **_engine_options(options.engine, options.precision, model),
    )
    return config, inputs, outputs


def convert(model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
    """Write model.onnx, build.json and trtexec.sh; the plan itself is built on the device."""
    from edgesdk.atomic import staged_dir

    model, out_dir = Path(model), Path(out_dir)
    options = options or ConvertOptions()
    with tempfile.TemporaryDirectory(prefix="edgesdk-trt-") as work:
        meta = {}
        if options.precision == "int8":
            model, meta = quantize(model, Path(work) / MODEL_FILE, options)
        config, inputs, outputs = prepare(model, options)
        with staged_dir(out_dir) as tmp:
            files = write_build_files(tmp, model, config)
            artifact = Artifact(
                backend="tensorrt",
                precision=options.precision,
                root=tmp,
                files=files,
                inputs=inputs,
                outputs=outputs,
                meta={"build": BUILD_FILE, "trtexec": trtexec_command(config), **meta},
            )
            artifact.save()
    artifact.root = out_dir
    return artifact


def quantize(model: Path, out: Path, options: ConvertOptions) -> tuple[Path, dict]:
    """QDQ ONNX from onnxruntime's quantizer with TensorRT's int8 scheme (see qdq_problems): Q/DQ on
    the activations and weights of Conv/Gemm/MatMul only, symmetric int8 (weights per channel), zero
    points 0, biases float. A model that already has Q/DQ nodes is kept as is (prepare checks it)."""
    from edgesdk.build.model import load_model
    from edgesdk.backends.onnxruntime.convert import quantize_qdq

    if has_qdq(load_model(model)) or not options.calibration:  # without either, _prepare says what is missing
        return model, {"qdq_onnx": MODEL_FILE}
    float_nodes = quantize_qdq(model, out, options, tensorrt_ops=INT8_OPS)
    return out, {"qdq_onnx": MODEL_FILE, "float_nodes": float_nodes, "calib_method": options.calib_method}
