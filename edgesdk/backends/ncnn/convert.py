"""ONNX -> ncnn (model.param + model.bin) with the pnnx converter binary. Build side only.

pnnx renames blobs (in0.., out0.. in ONNX graph order) and drops the batch axis of most tensors;
the artifact's meta records both per tensor so the session can speak ONNX names and shapes.
pnnx's Python API mishandles fp16=False, so the bundled binary is run instead.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgesdk.errors import BackendUnavailable, ConversionError, ModelError, UnsupportedOpError
from edgesdk.build.model import (dim_values,
                                 fix_input_shapes,
                                 graph_inputs,
                                 infer_shapes,
                                 load_model,
                                 op_census,
                                 type_name)
from edgesdk.atomic import staged_dir
from edgesdk.backends.base import Artifact, ConvertOptions, TensorInfo, check_engine_options

PRECISIONS = ("fp32", "fp16", "int8")
PARAM_FILE = "model.param"
BIN_FILE = "model.bin"
PNNX_TIMEOUT_S = 600
NO_BATCH = 233  # pnnx's batch_index for a blob that has no batch axis
MAX_MAT_DIMS = 4  # ncnn.Mat holds at most 4 dims once the batch axis is gone
# ConvertOptions.engine keys (a profile's [engine_options]) this backend reads
ENGINE_OPTIONS = {"fp16_arithmetic": bool, "cpu_powersave": int}


def find_pnnx() -> Path:
    """The pnnx executable shipped in the `pnnx` wheel, else one on PATH."""
    spec = importlib.util.find_spec("pnnx")
    if spec is not None and spec.submodule_search_locations:
        for d in spec.submodule_search_locations:
            for exe in ("pnnx", "pnnx.exe"):
                p = Path(d) / exe
                if p.is_file() and os.access(p, os.X_OK):
                    return p
    found = shutil.which("pnnx")
    if found:
        return Path(found)
    raise BackendUnavailable(
        "the pnnx converter is not installed: pip install --no-deps pnnx (its binary needs no torch)"
    )


def _pnnx_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pnnx")
    except PackageNotFoundError:
        return None


def _tensor_infos(proto) -> tuple[list[TensorInfo], list[TensorInfo]]:
    def info(vi) -> TensorInfo:
        return TensorInfo(vi.name, tuple(dim_values(vi.type)), type_name(vi.type))

    return [info(vi) for vi in graph_inputs(proto)], [info(vi) for vi in proto.graph.output]


# Operator inputs that ncnn layers take as constants (layer parameters), by input position.
_CONSTANT_INPUTS = {
    "Resize": (1, 2, 3), "Upsample": (1,), "Reshape": (1,), "Expand": (1,), "Tile": (1,),
    "Pad": (1, 2), "Slice": (1, 2, 3, 4), "ConstantOfShape": (0,), "TopK": (1,),
}


def _runtime_parameters(proto, inputs: list[TensorInfo]) -> list[tuple[str, str]]:
    """(op type, model input) for each op whose sizes or scales come straight from a model input.

    pnnx folds such ops by running them on made-up input values, and crashes when that fails."""
    names = {t.name for t in inputs}
    found = []
    for node in proto.graph.node:
        for i in _CONSTANT_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] in names:
                found.append((node.op_type, node.input[i]))
    return found


def shape_hint(t: TensorInfo) -> str:
    names = {2: "H", 3: "W"} if len(t.shape) == 4 else {}
    dims = [
        str(d) if isinstance(d, int) and d > 0 else ("1" if i == 0 else names.get(i, f"D{i}"))
        for i, d in enumerate(t.shape)
    ]
    return f"--shape {t.name}={'x'.join(dims)}"


def _check_shape(t: TensorInfo, shape, what: str) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) != len(t.shape) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ModelError(f"input {t.name!r}: {what} {list(shape)} does not fit the model's shape {list(t.shape)}")
    for want, got in zip(t.shape, shape):
        if isinstance(want, int) and want > 0 and want != got:
            raise ModelError(f"input {t.name!r}: {what} {list(shape)} does not fit the model's shape {list(t.shape)}")
    return shape


def build_shapes(inputs: list[TensorInfo], options: ConvertOptions) -> tuple[list[tuple], list[tuple]]:
    """The two shapes handed to pnnx per input; dims that differ between them stay dynamic in ncnn."""
    names = {t.name for t in inputs}
    unknown = sorted((set(options.shapes) | set(options.ranges)) - names)
    if unknown:
        raise ModelError(f"shapes given for unknown input(s) {unknown}; the model's inputs are {sorted(names)}")
    first, second = [], []
    for t in inputs:
        if t.name in options.shapes:
            s1 = s2 = _check_shape(t, options.shapes[t.name], "shape")
        elif t.name in options.ranges:
            r = options.ranges[t.name]
            lo, s1, hi = (_check_shape(t, s, w) for s, w in ((r.min, "range min"), (r.opt, "range opt"), (r.max, "range max")))
            if not all(a <= b <= c for a, b, c in zip(lo, s1, hi)):
                raise ModelError(f"input {t.name!r}: range needs min <= opt <= max per dim, got {list(lo)}, {list(s1)}, {list(hi)}")
            # the smaller second shape keeps the probe run below cheap
            s2 = lo if lo != s1 else hi
        else:
            # ncnn runs one sample at a time, so a dynamic leading (batch) dim can only be 1.
            dims = [1 if i == 0 and not (isinstance(d, int) and d > 0) else d for i, d in enumerate(t.shape)]
            if not all(isinstance(d, int) and d > 0 for d in dims):
                raise ConversionError(
                    f"input {t.name!r} has dynamic dims {list(t.shape)}; ncnn conversion needs a shape for it, "
                    f"e.g. {shape_hint(t)} (or a min/opt/max range in the target profile)"
                )
            s1 = s2 = tuple(dims)
        first.append(s1)
        second.append(s2)
    return first, second


def _shape_arg(key: str, shapes: list[tuple]) -> str:
    return key + "=" + ",".join("[" + ",".join(str(d) for d in s) + "]" for s in shapes)


def _run_pnnx(pnnx: Path, work: Path, first: list[tuple], second: list[tuple], fp16: bool) -> str:
    args = [
        str(pnnx),
        "model.onnx",
        _shape_arg("inputshape", first),
        f"fp16={int(fp16)}",
        # every output named explicitly so nothing lands beside the caller's model
        "pnnxparam=model.pnnx.param",
        "pnnxbin=model.pnnx.bin",
        "pnnxpy=model_pnnx.py",
        "pnnxonnx=model.pnnx.onnx",
        "ncnnparam=model.ncnn.param",
        "ncnnbin=model.ncnn.bin",
        "ncnnpy=model_ncnn.py",
    ]
    if second != first:
        args.insert(3, _shape_arg("inputshape2", second))
    try:
        proc = subprocess.run(
            args, cwd=work, capture_output=True, text=True, errors="replace", timeout=PNNX_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(f"pnnx did not finish within {PNNX_TIMEOUT_S} s") from None
    except OSError as e:
        raise BackendUnavailable(f"cannot run pnnx at {pnnx}: {e}") from None
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        # pnnx crashes (SIGSEGV) rather than failing cleanly on operators it cannot take.
        ops = sorted(set(re.findall(r"unexpected op_type (\S+)", log)) | set(re.findall(r"No Op registered for (\S+)", log)))
        if ops:
            raise UnsupportedOpError("ncnn", ops, "pnnx cannot convert these operators")
        how = (
            f"was killed by {signal.Signals(-proc.returncode).name}"
            if proc.returncode < 0 and -proc.returncode in signal.valid_signals()
            else f"exited with code {proc.returncode}"
        )
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise ConversionError(f"pnnx {how}; last output:\n{tail}")
    for f in ("model.ncnn.param", "model.ncnn.bin", "model_ncnn.py"):
        if not (work / f).is_file():
            raise ConversionError(f"pnnx reported success but wrote no {f}; output:\n{log[-2000:]}")
    return log


def _batch_axes(py_text: str, prefix: str, count: int) -> list[int | None]:
    """Batch axis per blob in0.. or out0.., as pnnx's generated model_ncnn.py reads them."""
    if prefix == "in":
        found = dict(re.findall(r'ex\.input\("(in\d+)",\s*ncnn\.Mat\(\w+\.numpy\(\),\s*batch_index=(\d+)\)', py_text))
    else:
        found = dict(re.findall(r"\b(out\d+)\.numpy\(batch_index=(\d+)\)", py_text))
    axes = []
    for i in range(count):
        blob = f"{prefix}{i}"
        if blob not in found:
            raise ConversionError(
                f"cannot tell the batch axis of blob {blob} from pnnx's model_ncnn.py "
                f"(pnnx {_pnnx_version()} writes a form this version of edgesdk does not read)"
            )
        axes.append(None if int(found[blob]) == NO_BATCH else int(found[blob]))
    return axes


def _expected_output_shapes(proto, inputs: list[TensorInfo], shapes: list[tuple]) -> dict[str, tuple]:
    """Output shapes ONNX shape inference gives with the inputs fixed (ints where it knows them)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    fix_input_shapes(m, {t.name: s for t, s in zip(inputs, shapes)})
    try:
        m = infer_shapes(m)
    except ModelError:  # a cross-check only; a model onnx cannot type still converts
        return {}
    return {vi.name: tuple(dim_values(vi.type)) for vi in m.graph.output}


def convert(model: Path, out_dir: Path, options: ConvertOptions) -> Artifact:
    """Convert an ONNX file into out_dir/model.param + model.bin (+ artifact.json)."""
    from edgesdk.backends.ncnn.session import param_layers, shape_matches

    model, out_dir = Path(model), Path(out_dir)
    if options.precision not in PRECISIONS:
        raise ConversionError(f"ncnn backend: precision {options.precision!r} is not available; choose one of {PRECISIONS}")
    engine = _engine_options(options)
    pnnx = find_pnnx()
    proto = load_model(model)

    # pnnx segfaults on operators outside standard ONNX (ONNX-ML, com.microsoft): refuse them first.
    foreign = [op for op in op_census(proto) if ":" in op]
    if foreign:
        raise UnsupportedOpError("ncnn", foreign, "pnnx converts standard ONNX operators only (domain ai.onnx)")
    inputs, outputs = _tensor_infos(proto)
    runtime = _runtime_parameters(proto, inputs)
    if runtime:
        uses = ", ".join(f"{op} takes model input {name!r} as a parameter" for op, name in runtime)
        raise UnsupportedOpError(
            "ncnn", sorted({op for op, _ in runtime}),
            f"{uses}; ncnn layers need these values as constants: export the model with them fixed",
        )
    for t in inputs:
        if t.dtype != "float32":
            raise ConversionError(f"input {t.name!r} is {t.dtype}; ncnn takes float32 inputs only")
    first, second = build_shapes(inputs, options)
    in_infos = [TensorInfo(t.name, _merge_dims(t, s1, s2), t.dtype) for t, s1, s2 in zip(inputs, first, second)]
    if options.precision == "int8":  # bad calibration data fails before pnnx runs
        from edgesdk.backends.ncnn.int8 import check_options

        feeds = check_options(options.calibration, options.calib_method, options.exclude, in_infos)

    with tempfile.TemporaryDirectory(prefix="edgesdk-pnnx-") as tmp, staged_dir(out_dir) as stage:
        work = Path(tmp)
        write_work_model(proto, work / "model.onnx", model)
        _run_pnnx(pnnx, work, first, second, options.precision == "fp16")

        layers = param_layers((work / "model.ncnn.param").read_text())
        _check_layers(layers)
        n_inputs = sum(1 for kind, _, _ in layers if kind == "Input")
        blobs = {b for _, _, outs in layers for b in outs}
        missing = [f"out{i}" for i in range(len(outputs)) if f"out{i}" not in blobs]
        if n_inputs != len(inputs) or missing:
            raise ConversionError(
                f"pnnx wrote {n_inputs} input(s) for the model's {len(inputs)} and lacks output blob(s) {missing}; "
                "an input the graph never uses, or an output that is also an input, is not supported"
            )
        py_text = (work / "model_ncnn.py").read_text()
        in_axes = _batch_axes(py_text, "in", len(inputs))
        out_axes = _batch_axes(py_text, "out", len(outputs))
        for t, s1, s2, axis in zip(inputs, first, second, in_axes):
            if axis is not None and (s1[axis] != 1 or s2[axis] != 1):
                raise ConversionError(
                    f"input {t.name!r}: ncnn runs batch 1 only, shape {list(s1)} has batch {max(s1[axis], s2[axis])}; "
                    "convert with batch 1 and run samples one by one"
                )
            if len(s1) - (axis is not None) > MAX_MAT_DIMS:
                raise ConversionError(f"input {t.name!r}: ncnn tensors have at most {MAX_MAT_DIMS} dims, shape {list(s1)}")

        shutil.move(str(work / "model.ncnn.param"), str(stage / PARAM_FILE))
        shutil.move(str(work / "model.ncnn.bin"), str(stage / BIN_FILE))
        meta = {
            "param": PARAM_FILE,
            "bin": BIN_FILE,
            "inputs": {t.name: {"blob": f"in{i}", "batch_axis": a} for i, (t, a) in enumerate(zip(inputs, in_axes))},
            "outputs": {t.name: {"blob": f"out{i}", "batch_axis": a} for i, (t, a) in enumerate(zip(outputs, out_axes))},
            "pnnx_version": _pnnx_version(),
            **engine,
        }
        if options.precision == "int8":
            # pnnx wrote fp32 (fp16=0): calibrate it with ncnn and rewrite the files as int8 in place
            from edgesdk.backends.ncnn.int8 import quantize

            fp32 = Artifact("ncnn", "fp32", stage, [PARAM_FILE, BIN_FILE], in_infos, [], meta)
            meta["int8"] = quantize(fp32, proto, feeds, options.calib_method, options.exclude)

        # Output shapes as ncnn really produces them at the build shape(s), checked against ONNX:
        # a wrong batch axis or a mangled reshape shows up here rather than as silent wrong output.
        any_rank = [TensorInfo(t.name, ("?",) * len(t.shape), t.dtype) for t in outputs]
        probe = Artifact("ncnn", options.precision, stage, [PARAM_FILE, BIN_FILE], in_infos, any_rank, meta)
        got = _probe(probe, inputs, first)
        got2 = _probe(probe, inputs, second) if second != first else got
        expected = _expected_output_shapes(proto, inputs, first)
        out_infos = []
        for t in outputs:
            want = expected.get(t.name, t.shape)
            if not shape_matches(want, got[t.name]):
                raise ConversionError(
                    f"ncnn's output {t.name!r} has shape {list(got[t.name])} where ONNX gives {list(want)}: "
                    "pnnx converted this model wrongly"
                )
            out_infos.append(TensorInfo(t.name, _merge_dims(t, got[t.name], got2[t.name]), t.dtype))

        Artifact("ncnn", options.precision, stage, [PARAM_FILE, BIN_FILE], in_infos, out_infos, meta).save()
    return Artifact("ncnn", options.precision, out_dir, [PARAM_FILE, BIN_FILE], in_infos, out_infos, meta)


def _engine_options(options: ConvertOptions) -> dict:
    """The engine knobs, checked, for meta: fp16_arithmetic (ARMv8.2 fp16 math, fp16 builds only) and
    cpu_powersave (ncnn's core selection: 2 pins big cores on big.LITTLE boards such as the RK3588)."""
    check_engine_options("ncnn", options.engine, ENGINE_OPTIONS)
    if options.engine.get("fp16_arithmetic") and options.precision != "fp16":
        raise ConversionError(f"ncnn backend: fp16_arithmetic needs precision fp16, not {options.precision}")
    powersave = options.engine.get("cpu_powersave", 0)
    if powersave not in (0, 1, 2):
        raise ConversionError(f"ncnn backend: cpu_powersave must be 0 (all cores), 1 (little) or 2 (big), got {powersave!r}")
    return {"fp16_arithmetic": bool(options.engine.get("fp16_arithmetic", False)), "cpu_powersave": powersave}


def _merge_dims(t: TensorInfo, a: tuple, b: tuple) -> tuple:
    """Dims equal in both builds/probes stay fixed; the others keep the ONNX dim's name."""
    return tuple(x if x == y else (t.shape[i] if isinstance(t.shape[i], str) else "?") for i, (x, y) in enumerate(zip(a, b)))


def write_work_model(proto, path: Path, source: Path) -> None:
    """A self-contained copy for pnnx, whose bundled onnxruntime refuses IR versions newer than it
    knows (current onnx writes those by default): the lowest IR carrying the model's opsets loads."""
    import onnx
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    min_ir = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    copy.ir_version = min(proto.ir_version, max(min_ir, 7))
    try:
        onnx.save(copy, str(path))
    except ValueError as e:  # protobuf's 2 GB limit
        raise ModelError(f"{source}: cannot be re-saved for conversion: {e}") from None


def _check_layers(layers: list[tuple[str, list[str], list[str]]]) -> None:
    """pnnx leaves operators it cannot lower under their pnnx/torch names; ncnn refuses to load those."""
    try:
        import ncnn
    except ImportError as e:
        raise BackendUnavailable(f"converting for ncnn needs the ncnn Python package to check the result ({e}); pip install ncnn") from e
    unknown = sorted({kind for kind, _, _ in layers if ncnn.layer_to_index(kind) < 0})
    if unknown:
        raise UnsupportedOpError(
            "ncnn", unknown,
            "pnnx left these operators without an ncnn layer (often a Resize/Reshape whose sizes come from a "
            "model input at run time; fix those inputs to constants or give a fixed --shape)",
        )


def _probe(artifact: Artifact, inputs: list[TensorInfo], shapes: list[tuple]) -> dict[str, tuple]:
    """Output shapes of one ncnn run on deterministic data of the given input shapes."""
    from edgesdk.backends.ncnn.session import NcnnSession

    rng = np.random.default_rng(0)
    feeds = {t.name: rng.random(s, dtype=np.float32) for t, s in zip(inputs, shapes)}
    try:
        with NcnnSession(artifact, threads=1) as s:
            return {k: v.shape for k, v in s.run(feeds).items()}
    except ModelError as e:
        raise ConversionError(f"the converted model does not run in ncnn: {e}") from None
