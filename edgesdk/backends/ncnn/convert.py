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

from ...errors import BackendUnavailable, ConversionError, ModelError, UnsupportedOpError
from ..base import Artifact, ConvertOptions, TensorInfo

PRECISIONS = ("fp32", "fp16")
PARAM_FILE = "model.param"
BIN_FILE = "model.bin"
PNNX_TIMEOUT_S = 600
NO_BATCH = 233  # pnnx's batch_index for a blob that has no batch axis
MAX_MAT_DIMS = 4  # ncnn.Mat holds at most 4 dims once the batch axis is gone
STANDARD_DOMAINS = ("", "ai.onnx")


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


def _load_onnx(model: Path):
    import onnx

    if not model.is_file():
        raise ModelError(f"{model}: no such ONNX file")
    try:
        return onnx.load(str(model))
    except Exception as e:  # onnx raises DecodeError, OSError, ValueError... for bad files
        raise ModelError(f"{model}: not a readable ONNX model: {e}") from None


def _nonstandard_ops(graph, found: dict[str, str]) -> dict[str, str]:
    """op_type -> domain for every node outside the standard ONNX domain, subgraphs included."""
    for node in graph.node:
        if node.domain not in STANDARD_DOMAINS:
            found.setdefault(node.op_type, node.domain)
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _nonstandard_ops(g, found)
    return found


def _tensor_infos(graph) -> tuple[list[TensorInfo], list[TensorInfo]]:
    from onnx import helper

    def info(vi) -> TensorInfo:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        return TensorInfo(vi.name, dims, str(helper.tensor_dtype_to_np_dtype(tt.elem_type)))

    weights = {i.name for i in graph.initializer}
    inputs = [info(vi) for vi in graph.input if vi.name not in weights]
    return inputs, [info(vi) for vi in graph.output]


def _shape_hint(t: TensorInfo) -> str:
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
                    f"e.g. {_shape_hint(t)} (or a min/opt/max range in the target profile)"
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


def _param_layers(param_text: str) -> list[tuple[str, list[str]]]:
    """(layer type, output blob names) per layer of an ncnn .param file."""
    layers = []
    for line in param_text.splitlines()[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        n_in, n_out = int(parts[2]), int(parts[3])
        layers.append((parts[0], parts[4 + n_in : 4 + n_in + n_out]))
    return layers


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
    by_name = {t.name: s for t, s in zip(inputs, shapes)}
    for vi in m.graph.input:
        if vi.name in by_name:
            dims = vi.type.tensor_type.shape.dim
            for d, v in zip(dims, by_name[vi.name]):
                d.Clear()
                d.dim_value = v
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # inference is a cross-check only; a model it cannot type still converts
        return {}
    out = {}
    for vi in m.graph.output:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else "?" for d in dims)
    return out


def convert(model: Path, out_dir: Path, options: ConvertOptions) -> Artifact:
    """Convert an ONNX file into out_dir/model.param + model.bin (+ artifact.json)."""
    import onnx
    from onnx import helper

    from .session import shape_matches

    model, out_dir = Path(model), Path(out_dir)
    if options.precision not in PRECISIONS:
        raise ConversionError(f"ncnn backend: precision {options.precision!r} is not available; choose one of {PRECISIONS}")
    pnnx = find_pnnx()
    proto = _load_onnx(model)

    foreign = _nonstandard_ops(proto.graph, {})
    if foreign:
        domains = sorted(set(foreign.values()))
        raise UnsupportedOpError(
            "ncnn", sorted(foreign), f"operators of domain(s) {', '.join(domains)} are outside standard ONNX, which is all pnnx converts"
        )
    inputs, outputs = _tensor_infos(proto.graph)
    for t in inputs:
        if t.dtype != "float32":
            raise ConversionError(f"input {t.name!r} is {t.dtype}; ncnn takes float32 inputs only")
    first, second = build_shapes(inputs, options)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        work = stage / "pnnx"
        work.mkdir()
        # pnnx's bundled onnxruntime refuses IR versions newer than it knows, which current onnx
        # writes by default; the lowest IR that carries the model's opsets loads everywhere.
        work_proto = onnx.ModelProto()
        work_proto.CopyFrom(proto)
        min_ir = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
        work_proto.ir_version = min(proto.ir_version, max(min_ir, 7))
        try:
            onnx.save(work_proto, str(work / "model.onnx"))
        except ValueError as e:  # > 2 GB protobuf
            raise ModelError(f"{model}: cannot be re-saved for conversion: {e}") from None
        del work_proto

        _run_pnnx(pnnx, work, first, second, options.precision == "fp16")

        param_text = (work / "model.ncnn.param").read_text()
        layers = _param_layers(param_text)
        _check_layers(layers)
        n_inputs = sum(1 for kind, _ in layers if kind == "Input")
        blobs = {b for _, outs in layers for b in outs}
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

        final = stage / "out"
        final.mkdir()
        shutil.move(str(work / "model.ncnn.param"), str(final / PARAM_FILE))
        shutil.move(str(work / "model.ncnn.bin"), str(final / BIN_FILE))
        meta = {
            "param": PARAM_FILE,
            "bin": BIN_FILE,
            "inputs": {t.name: {"blob": f"in{i}", "batch_axis": a} for i, (t, a) in enumerate(zip(inputs, in_axes))},
            "outputs": {t.name: {"blob": f"out{i}", "batch_axis": a} for i, (t, a) in enumerate(zip(outputs, out_axes))},
            "pnnx_version": _pnnx_version(),
        }
        in_infos = [
            TensorInfo(t.name, tuple(a if a == b else (t.shape[i] if isinstance(t.shape[i], str) else "?") for i, (a, b) in enumerate(zip(s1, s2))), t.dtype)
            for t, s1, s2 in zip(inputs, first, second)
        ]
        # Output shapes as ncnn really produces them at the build shape(s), checked against ONNX.
        probe = Artifact("ncnn", options.precision, final, [PARAM_FILE, BIN_FILE], in_infos,
                         [TensorInfo(t.name, ("?",) * len(t.shape), t.dtype) for t in outputs], meta)
        got = _probe(probe, inputs, first)
        got2 = _probe(probe, inputs, second) if second != first else got
        expected = _expected_output_shapes(proto, inputs, first)
        out_infos = []
        for t in outputs:
            exp = expected.get(t.name, t.shape)
            if not shape_matches(exp, got[t.name]):
                raise ConversionError(
                    f"ncnn's output {t.name!r} has shape {list(got[t.name])} where ONNX gives {list(exp)}: "
                    "pnnx converted this model wrongly"
                )
            dims = tuple(
                a if a == b else (t.shape[i] if isinstance(t.shape[i], str) else "?")
                for i, (a, b) in enumerate(zip(got[t.name], got2[t.name]))
            )
            out_infos.append(TensorInfo(t.name, dims, t.dtype))

        artifact = Artifact("ncnn", options.precision, final, [PARAM_FILE, BIN_FILE], in_infos, out_infos, meta)
        artifact.save()
        _publish(final, out_dir)
        artifact.root = out_dir
        return artifact
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_layers(layers: list[tuple[str, list[str]]]) -> None:
    """pnnx leaves operators it cannot lower under their pnnx/torch names; ncnn refuses to load those."""
    try:
        import ncnn
    except ImportError as e:
        raise BackendUnavailable(f"converting for ncnn needs the ncnn Python package to check the result ({e}); pip install ncnn") from e
    unknown = sorted({kind for kind, _ in layers if ncnn.layer_to_index(kind) < 0})
    if unknown:
        raise UnsupportedOpError(
            "ncnn", unknown,
            "pnnx left these operators without an ncnn layer (often a Resize/Reshape whose sizes come from a "
            "model input at run time; fix those inputs to constants or give a fixed --shape)",
        )


def _probe(artifact: Artifact, inputs: list[TensorInfo], shapes: list[tuple]) -> dict[str, tuple]:
    """Output shapes of one ncnn run on deterministic data of the given input shapes."""
    from .session import NcnnSession

    rng = np.random.default_rng(0)
    feeds = {t.name: rng.random(s, dtype=np.float32) for t, s in zip(inputs, shapes)}
    try:
        with NcnnSession(artifact, threads=1) as s:
            return {k: v.shape for k, v in s.run(feeds).items()}
    except ModelError as e:
        raise ConversionError(f"the converted model does not run in ncnn: {e}") from None


def _publish(staged: Path, out_dir: Path) -> None:
    """Move the staged files into out_dir: a rename when out_dir is new, else file by file."""
    if not out_dir.exists():
        os.replace(staged, out_dir)
        return
    if not out_dir.is_dir():
        raise ConversionError(f"{out_dir}: exists and is not a directory")
    for f in staged.iterdir():
        os.replace(f, out_dir / f.name)
