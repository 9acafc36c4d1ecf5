"""Triton Inference Server: export a model repository that `tritonserver` serves as it is.

    <out_dir>/<model_name>/config.pbtxt
    <out_dir>/<model_name>/1/model.onnx                    triton_backend "onnxruntime" (default)
    <out_dir>/<model_name>/1/model.xml + model.bin         "openvino" (IR from edgesdk's OpenVINO backend)
    <out_dir>/<model_name>/1/model.onnx + build.json + trtexec.sh
                                                           "tensorrt": model.plan is built on the serving GPU
    <out_dir>/README.txt                                   how to serve it (and build the plan)

The model files come from the engine's own edgesdk backend (found through the registry), so shape
fixing, precision and op checks are the same as for a bundle. config.pbtxt is protobuf text format
of Triton's ModelConfig (model_config.proto), written by a small writer here: no tritonclient needed.
Build side only; there is no in-process session (open() says how to serve the repository).
"""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

from edgesdk.errors import ConversionError
from edgesdk.backends.base import Artifact, ConvertOptions, ShapeRange, TensorInfo

CONFIG_FILE = "config.pbtxt"
README_FILE = "README.txt"
VERSION = "1"
TRITON_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
TRITON_KEYS = ("triton_backend", "model_name", "max_batch_size", "preferred_batch_size",
               "max_queue_delay_us", "instance_count", "instance_kind")
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_QUEUE_DELAY_US = 100

# numpy dtype name -> Triton DataType (model_config.proto)
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "object": "TYPE_STRING", "bfloat16": "TYPE_BF16",
}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------- protobuf text format

class Enum(str):
    """A protobuf enum value (TYPE_FP32, KIND_CPU): written bare, not as a quoted string."""


def _quote(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)  # text format takes UTF-8 as is
    return '"' + "".join(out) + '"'


def _scalar(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _quote(v)
    raise TypeError(f"no text-format form for {type(v).__name__}")


def to_pbtxt(message: dict, indent: int = 0) -> str:
    """A message as protobuf text: dict -> `key { ... }`, list of dicts -> `key [ {...}, ... ]`,
    list of scalars -> `key: [ a, b ]`, scalar -> `key: value`. None values are left out."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, dict):
            body = to_pbtxt(value, indent + 1)
            lines.append(f"{pad}{key} {{\n{body}{pad}}}" if body else f"{pad}{key} {{ }}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = [f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(items) + f"\n{pad}]")
        elif isinstance(value, list):
            items = ", ".join(_scalar(v) for v in value)
            lines.append(f"{pad}{key}: [ {items} ]" if items else f"{pad}{key}: [ ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------- config (pure)

def triton_dtype(t: TensorInfo, source="model") -> Enum:
    try:
        return Enum(TRITON_DTYPES[t.dtype])
    except KeyError:
        raise ConversionError(f"{source}: tensor {t.name!r} has type {t.dtype}, which Triton has no data_type for") \
            from None


def batch_blocker(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> str | None:
    """None when every input and output has a dynamic first dim (Triton can batch), else the reason not."""
    for t in inputs + outputs:
        if not t.shape:
            return f"{t.name!r} has no dims"
        if isinstance(t.shape[0], int):
            return f"{t.name!r} has a fixed first dim {list(t.shape)}"
    return None


def _dims(t: TensorInfo, batching: bool, source) -> list[int]:
    if not t.shape:
        raise ConversionError(f"{source}: tensor {t.name!r} has no known shape; Triton needs its dims")
    dims = [d if isinstance(d, int) else -1 for d in t.shape]
    return dims[1:] if batching else dims


def _tensors(infos: list[TensorInfo], batching: bool, names: dict[str, str], source) -> list[dict]:
    out = []
    for t in infos:
        entry = {"name": names.get(t.name, t.name), "data_type": triton_dtype(t, source),
                 "dims": _dims(t, batching, source)}
        if not entry["dims"]:  # a [batch] tensor: Triton wants dims [1] reshaped to no dims
            entry["dims"], entry["reshape"] = [1], {"shape": []}
        out.append(entry)
    return out


def model_config(
    name: str,
    kind: str,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    max_batch_size: int,
    preferred_batch_size: list[int] | None = None,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: int = 1,
    instance_kind: str = "cpu",
    names: dict[str, str] | None = None,
    source="model",
) -> dict:
    """Triton's ModelConfig as a dict for to_pbtxt. max_batch_size > 0 drops the first dim from dims."""
    batching = max_batch_size > 0
    names = names or {}
    config: dict = {"name": name}
    if kind == "onnxruntime":
        config["platform"] = "onnxruntime_onnx"
    elif kind == "tensorrt":
        config["platform"] = "tensorrt_plan"
    else:
        config["backend"] = "openvino"
    config["max_batch_size"] = max_batch_size
    config["input"] = _tensors(inputs, batching, names, source)
    config["output"] = _tensors(outputs, batching, names, source)
    if batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": preferred_batch_size or None,
            "max_queue_delay_microseconds": max_queue_delay_us,
        }
    config["instance_group"] = [{"count": instances, "kind": Enum(f"KIND_{instance_kind.upper()}")}]
    return config


def _positive_int(value, what: str, source, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConversionError(f"{source}: {what} must be an integer >= {minimum}, got {value!r}")
    return value


def _triton_options(engine: dict, model: Path) -> tuple[dict, dict]:
    """Split options.engine into Triton's own settings (validated, defaults filled) and the engine backend's;
    the model is named by model_name, else after `model` (the user's file)."""
    own = {k: v for k, v in engine.items() if k in TRITON_KEYS}
    rest = {k: v for k, v in engine.items() if k not in TRITON_KEYS}
    kind = own.get("triton_backend", "onnxruntime")
    if kind not in TRITON_BACKENDS:
        raise ConversionError(f"{model}: triton_backend must be one of {', '.join(TRITON_BACKENDS)}, got {kind!r}")
    name = own.get("model_name") or re.sub(r"[^A-Za-z0-9_.-]", "_", model.stem).lstrip(".-") or "model"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConversionError(f"{model}: model_name {name!r} must be a directory name of letters, digits, '_', '.', '-'")
    default_kind = "gpu" if kind == "tensorrt" else "cpu"
    instance_kind = own.get("instance_kind", default_kind)
    allowed = {"onnxruntime": ("cpu", "gpu"), "openvino": ("cpu",), "tensorrt": ("gpu",)}[kind]
    if instance_kind not in allowed:
        raise ConversionError(f"{model}: Triton's {kind} backend runs instances of kind {' or '.join(allowed)}, "
                              f"got instance_kind {instance_kind!r}")
    opts = {
        "kind": kind,
        "name": name,
        "max_batch_size": own.get("max_batch_size"),  # None: decided from the model's dims
        "preferred_batch_size": own.get("preferred_batch_size"),
        "max_queue_delay_us": _positive_int(own.get("max_queue_delay_us", DEFAULT_MAX_QUEUE_DELAY_US),
                                            "max_queue_delay_us", model, minimum=0),
        "instance_count": _positive_int(own.get("instance_count", 1), "instance_count", model),
        "instance_kind": instance_kind,
    }
    if kind == "onnxruntime" and rest:
        raise ConversionError(f"{model}: unknown engine option(s) {sorted(rest)} for Triton with onnxruntime; "
                              f"known: {list(TRITON_KEYS)}")
    return opts, rest


def _batch_settings(opts: dict, inputs: list[TensorInfo], outputs: list[TensorInfo],
                    model: Path) -> tuple[int, list, str | None]:
    """(max_batch_size, preferred sizes, why batching is off or None). The max_batch_size option is the cap
    for models that can batch; a model with a fixed first dim is served unbatched, and the reason recorded."""
    mbs = opts["max_batch_size"]
    mbs = DEFAULT_MAX_BATCH_SIZE if mbs is None else _positive_int(mbs, "max_batch_size", model, minimum=0)
    blocker = batch_blocker(inputs, outputs)
    if mbs == 0 or blocker:
        return 0, [], (f"not batched: {blocker}" if mbs and blocker else None)
    preferred = opts["preferred_batch_size"]
    if preferred is None:
        preferred = sorted({max(mbs // 2, 1), mbs})
    if not isinstance(preferred, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= mbs for b in preferred):
        raise ConversionError(f"{model}: preferred_batch_size must be a list of integers in 1..{mbs}, got {preferred!r}")
    return mbs, preferred, None


def _batch_ranges(inputs: list[TensorInfo], options: ConvertOptions, mbs: int, model: Path) -> dict[str, ShapeRange]:
    """TensorRT profiles covering batch 1..max_batch_size: filled in for inputs whose only dynamic dim is the
    batch, checked for ranges the caller gave (other dynamic dims need the caller's ranges)."""
    ranges = dict(options.ranges)
    for t in inputs:
        if t.name in ranges or t.name in options.shapes or not t.shape or any(
                not isinstance(d, int) for d in t.shape[1:]):
            continue
        rest = tuple(t.shape[1:])
        ranges[t.name] = ShapeRange((1,) + rest, (max(mbs // 2, 1),) + rest, (mbs,) + rest)
    for name, r in ranges.items():
        if r.min and (r.min[0] != 1 or r.max[0] < mbs):
            raise ConversionError(
                f"{model}: Triton sends batches of 1..{mbs} but the range of input {name!r} allows batch "
                f"{r.min[0]}..{r.max[0]}; make min batch 1 and max batch >= {mbs}, or lower max_batch_size")
    return ranges


def readme(root: Path, name: str, kind: str, max_batch_size: int, batching_note: str | None = None) -> str:
    lines = [
        "Triton Inference Server model repository written by edgesdk.",
        "",
        f'Model "{name}": Triton backend {kind}, max_batch_size {max_batch_size}'
        + (f" ({batching_note})." if batching_note else "."),
        "",
    ]
    if kind == "openvino":
        lines += [
            "Precision: OpenVINO's CPU plugin defaults to bf16 inference on CPUs with bf16 support",
            "(AVX512_BF16/AMX), and Triton's OpenVINO backend has no parameter to force f32. Compare its",
            "outputs with the ONNX model before relying on fp32 accuracy.",
            "",
        ]
    if kind == "tensorrt":
        lines += [
            "The TensorRT plan is NOT included: a plan runs only on the GPU model and TensorRT version",
            "that built it. Build it on the serving machine, with the TensorRT of the Triton release that",
            "will serve it (inside the tritonserver container trtexec is at /usr/src/tensorrt/bin):",
            "",
            f"    sh {name}/{VERSION}/trtexec.sh",
            "",
            f"This writes {name}/{VERSION}/model.plan, which config.pbtxt (platform tensorrt_plan) loads;",
            f"{name}/{VERSION}/build.json holds the same build settings.",
            "",
        ]
    lines += [
        "Serve it:",
        "",
        f"    tritonserver --model-repository={root.resolve()}",
        "",
        "or with the container (use the same image to build the TensorRT plan):",
        "",
        "    docker run --rm -p8000:8000 -p8001:8001 -p8002:8002 -v \"$PWD\":/models \\",
        "        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models",
        "",
    ]
    return "\n".join(lines)


def convert(model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
    """Write the model repository: the engine backend converts, Triton's config and README go around it."""
    from edgesdk.backends import registry
    from edgesdk.build.model import load_model
    from edgesdk.atomic import staged_dir
    from edgesdk.backends.tensorrt.convert import onnx_io

    model, out_dir = Path(model), Path(out_dir)
    options = options or ConvertOptions()
    # the user's file (package converts a temporary optimized copy): it names the model and the errors
    source = Path(options.source or model)
    opts, engine_rest = _triton_options(options.engine, source)
    kind, name = opts["kind"], opts["name"]
    backend = registry.get(kind)

    inputs, outputs = onnx_io(load_model(model))
    # A --shape fixes an input for this build: its dims decide batching as they will be served.
    sized = [TensorInfo(t.name, tuple(options.shapes[t.name]), t.dtype) if t.name in options.shapes else t
             for t in inputs]
    mbs, preferred, batching_note = _batch_settings(opts, sized, outputs, source)
    ranges = _batch_ranges(inputs, options, mbs, source) if kind == "tensorrt" and mbs else dict(options.ranges)
    # Everything else goes to the engine as given: int8's calibration feeds, float layers and method included.
    sub_options = dataclasses.replace(options, shapes=dict(options.shapes), ranges=ranges, engine=engine_rest)

    with staged_dir(out_dir) as tmp:
        sub = backend.convert(model, tmp / ".engine", sub_options)
        version_dir = tmp / name / VERSION
        version_dir.mkdir(parents=True)
        for rel in sub.files:
            shutil.move(str(sub.path(rel)), str(version_dir / rel))
        shutil.rmtree(tmp / ".engine")
        config = model_config(
            name, kind, sub.inputs, sub.outputs, mbs, preferred, opts["max_queue_delay_us"],
            opts["instance_count"], opts["instance_kind"], names=sub.meta.get("tensor_names"), source=source)
        (tmp / name / CONFIG_FILE).write_text(to_pbtxt(config))
        (tmp / README_FILE).write_text(readme(out_dir, name, kind, mbs, batching_note))
        artifact = Artifact(
            backend="triton",
            precision=options.precision,
            root=tmp,
            files=[f"{name}/{CONFIG_FILE}"] + [f"{name}/{VERSION}/{rel}" for rel in sub.files] + [README_FILE],
            inputs=sub.inputs,
            outputs=sub.outputs,
            meta={"model_name": name, "triton_backend": kind, "max_batch_size": mbs,
                  "batching_note": batching_note, "engine_meta": sub.meta},
        )
        artifact.save()
    artifact.root = out_dir
    return artifact
