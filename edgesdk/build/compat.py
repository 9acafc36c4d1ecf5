"""Per-backend compatibility of an ONNX model: operators, domains, opsets and dynamic input dims.

The tables (compat_tables.py) are plain data taken from each engine's own documentation. Where an
engine is installed, `probe=True` asks the backend's own probe to try it for real, and its answer
overrides the table. Build side: onnx and the engines are imported lazily.
"""
from __future__ import annotations

import numbers
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from edgesdk.backends.probe import Probe, key_line, op_name
from edgesdk.build.compat_tables import (COMPLETE_TABLES, FIX_HINT, INLINES_FUNCTIONS, IR_MAX, JETPACK6_TENSORRT,
                                         ML_DOMAIN, ML_OPSET_MAX, OPSET_RANGE, RKNN_PLATFORM, TABLES, tensorrt_table)
from edgesdk.build.model import (DEFAULT_DOMAINS, dim_values, fix_input_shapes, graph_inputs, infer_shapes,
                                 oversized_input, type_name)
from edgesdk.errors import ModelError

BACKENDS = ("ncnn", "openvino", "tensorrt", "onnxruntime", "rknn")
ENGINE = {"ncnn": "pnnx/ncnn", "openvino": "OpenVINO", "tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime",
          "rknn": f"rknn-toolkit2 ({RKNN_PLATFORM} NPU)"}


@dataclass
class BackendCompat:
    """Whether one backend can take the model; `unsupported` holds op types ("domain:op" outside ONNX)."""

    supported: bool = True
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"supported": self.supported, "unsupported": list(self.unsupported), "notes": list(self.notes)}


def check_compat(
    model,
    model_path: Path | None = None,
    shapes: dict[str, tuple] | None = None,
    probe: bool = True,
    tensorrt_version: str | None = None,
) -> dict[str, BackendCompat]:
    """Compatibility of a checked, shape-inferred ONNX model with each backend, keyed as BACKENDS.

    `shapes` fixes dynamic inputs (as --shape does); `probe` runs the installed engines on the model
    (OpenVINO convert_model, an ONNX Runtime session, the pnnx converter, an fp16 rknn-toolkit2 build for
    the RK3588 in the toolkit's own environment), overriding the tables.
    TensorRT is judged by the table of `tensorrt_version` (a profile's engine_options), else of the
    installed TensorRT, else of JetPack 6's.
    """
    source = model_path or "model"
    inputs = _input_dims(model, dict(shapes or {}), source)
    inlined, calls = _model_ops(model, inline=True), _model_ops(model, inline=False)
    ops = {b: inlined if b in INLINES_FUNCTIONS else calls for b in BACKENDS}
    opsets = {("" if o.domain in DEFAULT_DOMAINS else o.domain): int(o.version) for o in model.opset_import}
    folded = []
    if _table_answer("rknn", ops["rknn"], opsets)[0]:  # the toolkit folds what only counts dims and constants
        shape_math = _shape_math_ops(model, dict(shapes or {}), source)
        folded = _table_answer("rknn", ops["rknn"] & shape_math, opsets)[0]
        ops["rknn"] = ops["rknn"] - shape_math
    probes = {}
    if probe:  # an engine asked about an input too big to build would try to allocate it
        too_big = oversized_input(model, shapes)
        probes = ({b: f"not probed: {too_big[1]}" for b in BACKENDS} if too_big
                  else _run_probes(model, model_path, inputs, ops))

    trt = tensorrt_version or installed_tensorrt() or JETPACK6_TENSORRT
    supported, documented_no, trt_opsets = tensorrt_table(trt)
    tables = dict(TABLES, tensorrt=(supported, documented_no))
    report = {}
    for b in BACKENDS:
        unsupported, unverified = _table_answer(b, ops[b], opsets, tables[b])
        limits = _limit_notes(b, opsets, int(model.ir_version),
                              *((trt_opsets, f"TensorRT {trt}") if b == "tensorrt" else ()))
        c = BackendCompat(supported=not unsupported and not limits, unsupported=unsupported, notes=limits)
        result = probes.get(b)
        if isinstance(result, Probe):
            if result.ok:
                if c.unsupported:
                    c.notes.append(f"the table lists {', '.join(c.unsupported)}, yet {ENGINE[b]} took them")
                c.supported, c.unsupported = True, []
            else:
                c.supported = False
                c.unsupported = result.ops or c.unsupported
            if result.ok or result.ops:
                unverified = []
        c.notes.extend(_fix_notes(b, c.unsupported))
        if b not in INLINES_FUNCTIONS and any(op_name(*f) in c.unsupported for f in calls - inlined):
            c.notes.append(f"{ENGINE[b]} does not inline model-local functions: inline them first "
                           f"(onnx.inliner.inline_local_functions)")
        c.notes.extend(_dynamic_notes(b, inputs))
        if b == "rknn" and folded:
            c.notes.append(f"{', '.join(folded)} compute only from constants and input shapes here: rknn-toolkit2 "
                           "folds them away, so they need no NPU lowering")
        if unverified:
            c.notes.append(f"not in {ENGINE[b]}'s documented list; unverified: {', '.join(unverified)}")
        if isinstance(result, Probe):
            c.notes.append(f"probe: {result.reason}")
        elif result:
            c.notes.append(result)
        report[b] = c
    return report


def format_compat(table: dict, width: int = 100) -> str:
    """The readable table: one row per backend (ok/NO, unsupported ops), then its notes, wrapped."""
    lead = 18
    lines = [f"{'backend':<13}{'':<5}unsupported ops / notes"]
    for name, c in table.items():
        d = c.to_dict() if isinstance(c, BackendCompat) else c
        status = "ok" if d["supported"] else "NO"
        lines += textwrap.wrap(
            ", ".join(d["unsupported"]) or "-", width,
            initial_indent=f"{name:<13}{status:<5}", subsequent_indent=" " * lead, break_on_hyphens=False,
        )
        for note in d["notes"]:
            lines += textwrap.wrap(
                note, width, initial_indent=" " * lead + "- ", subsequent_indent=" " * (lead + 2),
                break_on_hyphens=False,
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the model's side

def _input_dims(model, shapes: dict, source) -> list[tuple[str, list, str]]:
    """(name, dims, dtype) per real input, dynamic dims as strings, after applying `shapes`."""
    import onnx

    inputs = onnx.ModelProto()
    inputs.graph.input.extend(graph_inputs(model))
    for name, shape in shapes.items():
        if not all(isinstance(d, numbers.Integral) and d > 0 for d in shape):
            raise ModelError(f"{source}: shape for input {name!r} must be positive integers, got {list(shape)}")
    fix_input_shapes(inputs, {k: tuple(int(d) for d in v) for k, v in shapes.items()}, source=source)
    return [(i.name, dim_values(i.type), type_name(i.type)) for i in inputs.graph.input]


def _model_ops(model, inline: bool) -> set[tuple[str, str]]:
    """(domain, op_type) of every node, inside subgraphs too; with `inline`, calls to model-local
    functions are replaced by the functions' bodies."""
    functions = {(f.domain, f.name): f for f in model.functions}
    found: set[tuple[str, str]] = set()
    seen: set[tuple[str, str]] = set()

    def walk(nodes):
        for node in nodes:
            key = (node.domain, node.op_type)
            if inline and key in functions:
                if key not in seen:
                    seen.add(key)
                    walk(functions[key].node)
                continue
            found.add(("" if node.domain in DEFAULT_DOMAINS else node.domain, node.op_type))
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g.node)
                for g in attr.graphs:
                    walk(g.node)

    walk(model.graph.node)
    return found


def _shape_math_ops(model, shapes: dict, source) -> set[tuple[str, str]]:
    """(domain, op) of main-graph nodes that compute only from constants and static shapes (Shape of a tensor
    whose dims are known at `shapes`, and what follows from it): a converter that folds constants removes them.
    An op that also runs on data somewhere is not in the set."""
    import onnx

    sized = onnx.ModelProto()
    sized.CopyFrom(model)
    try:
        sized = infer_shapes(fix_input_shapes(sized, shapes, source=source), source=source)
    except ModelError:  # then no shape is known to be static: only constants fold
        pass
    graph = sized.graph
    shaped = {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}

    def static(name: str) -> bool:
        t = shaped.get(name)
        return (t is not None and t.tensor_type.HasField("shape")
                and all(isinstance(d, int) for d in dim_values(t)))

    known = {i.name for i in graph.initializer}
    math, data = set(), set()
    for node in graph.node:
        key = ("" if node.domain in DEFAULT_DOMAINS else node.domain, node.op_type)
        if node.op_type in ("Shape", "Size") and node.input and static(node.input[0]):
            foldable = True
        else:
            foldable = all(not i or i in known for i in node.input)
        (math if foldable else data).add(key)
        if foldable:
            known.update(node.output)
    return math - data


def installed_tensorrt() -> str | None:
    """The installed TensorRT's version from its package metadata (importing it costs seconds), or None."""
    from importlib import metadata

    for name in ("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-cu13"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _table_answer(backend: str, ops: set, opsets: dict, table=None) -> tuple[list[str], list[str]]:
    """(unsupported, unverified) op names for `backend` by its table (TABLES' unless given)."""
    supported, documented_no = table or TABLES[backend]
    bad, unknown = [], []
    for domain, op in sorted(ops):
        if op in supported.get(domain, ()):
            continue
        if domain == "" and backend == "onnxruntime" and _is_onnx_function(op, opsets.get("", 1)):
            continue
        if domain == "" and op not in documented_no and backend not in COMPLETE_TABLES:
            unknown.append(op)
            continue
        # Ops of other domains count as unsupported unless the engine's table lists them.
        bad.append(op_name(domain, op))
    return bad, unknown


def _is_onnx_function(op: str, opset: int) -> bool:
    """ONNX defines the op as a function of other ops (engines may expand it)."""
    import onnx

    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except Exception:  # SchemaError: not an ONNX op at this opset
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def _limit_notes(backend: str, opsets: dict, ir_version: int, opset_range=None, engine: str | None = None) -> list[str]:
    notes = []
    lo, hi = opset_range or OPSET_RANGE[backend]
    opset = opsets.get("")
    if opset is not None and hi is not None and opset > hi:
        notes.append(f"opset {opset} is newer than {engine or ENGINE[backend]}'s max {hi}: re-export at opset {hi} "
                     f"(or onnx.version_converter.convert_version(model, {hi}))")
    if opset is not None and lo is not None and opset < lo:
        notes.append(f"opset {opset} is older than {engine or ENGINE[backend]}'s min {lo}: "
                     f"onnx.version_converter.convert_version(model, {lo})")
    ml, ml_max = opsets.get(ML_DOMAIN), ML_OPSET_MAX.get(backend)
    if ml is not None and ml_max is not None and ml > ml_max:
        notes.append(f"{ML_DOMAIN} opset {ml} is newer than {engine or ENGINE[backend]}'s max {ml_max}: re-export with "
                     f"target_opset={{'{ML_DOMAIN}': {ml_max}}}")
    ir_max = IR_MAX.get(backend)
    if ir_max is not None and ir_version > ir_max:
        notes.append(f"IR version {ir_version} is newer than {engine or ENGINE[backend]}'s max {ir_max}: "
                     f"save with model.ir_version = {ir_max}")
    return notes


def _fix_notes(backend: str, unsupported: list[str]) -> list[str]:
    ml = [op for op in unsupported if op.startswith(ML_DOMAIN + ":")]
    other = [op for op in unsupported if op not in ml]
    notes = []
    if ml:
        notes.append(f"{ML_DOMAIN} (classic ML, e.g. scikit-learn via skl2onnx) ops have no {ENGINE[backend]} "
                     f"conversion: {', '.join(o.split(':', 1)[1] for o in ml)}; use the onnxruntime backend")
    if other:
        notes.append(f"{', '.join(other)}: {FIX_HINT[backend]}")
    return notes


def _shape_suggestion(name: str, dims: list) -> str:
    from edgesdk.backends.base import TensorInfo
    from edgesdk.backends.ncnn.convert import shape_hint  # the hint the ncnn converter itself gives

    return shape_hint(TensorInfo(name, tuple(dims), "float32"))


def _dynamic_notes(backend: str, inputs: list) -> list[str]:
    notes = []
    for name, dims, _ in inputs:
        dynamic = [d for d in dims if not isinstance(d, int)]
        if not dynamic:
            continue
        fix = _shape_suggestion(name, dims)
        if backend == "tensorrt":
            notes.append(f"input '{name}' has dynamic dims {dynamic}: TensorRT needs min/opt/max ranges "
                         f"(profile [inputs.{name}] min/opt/max) — or fix with {fix}")
        elif backend == "ncnn" and all(isinstance(d, int) for d in dims[1:]):
            notes.append(f"input '{name}' has a dynamic batch dim {dynamic}: ncnn runs one sample at a time, "
                         f"so pnnx converts it at batch 1")
        elif backend == "ncnn":
            notes.append(f"input '{name}' has dynamic dims {dynamic}: pnnx needs an input shape to convert — "
                         f"{fix}, or profile [inputs.{name}] min/opt/max to keep them dynamic (pnnx inputshape2); "
                         f"ncnn drops the batch dim")
        elif backend == "rknn":
            notes.append(f"input '{name}' has dynamic dims {dynamic}: the NPU runs fixed shapes — give the profile "
                         f"[inputs.{name}] shape, or {fix}")
    return notes


# ---------------------------------------------------------------------------- probes

def _run_probes(model, model_path, inputs, ops: dict[str, set]) -> dict[str, Probe | str]:
    """Each installed engine's verdict (the backend's own probe), or a note saying why it was not
    asked. Never raises."""
    import importlib.util

    from edgesdk.backends import registry

    trt = ("not probed: tensorrt not installed" if importlib.util.find_spec("tensorrt") is None
           else "not probed: edgesdk does not probe TensorRT; the table answers")
    out: dict[str, Probe | str] = {"tensorrt": trt}
    with tempfile.TemporaryDirectory(prefix="edgesdk-compat-") as tmp:
        tmp = Path(tmp)
        path = Path(model_path) if model_path and Path(model_path).is_file() else tmp / "model.onnx"
        if path.parent == tmp:
            try:
                path.write_bytes(model.SerializeToString())
            except ValueError as e:  # protobuf's 2 GB limit
                note = f"not probed: the model cannot be serialized ({e}); pass its file path"
                return {**out, "ncnn": note, "openvino": note, "onnxruntime": note, "rknn": note}
        for backend, who in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("ncnn", "pnnx"),
                             ("rknn", "rknn-toolkit2")):
            extra = {"platform": RKNN_PLATFORM} if backend == "rknn" else {}
            try:
                out[backend] = registry.get(backend).probe(model, path, tmp / backend, inputs, ops[backend], **extra)
            except ImportError:
                out[backend] = f"not probed: {backend} not installed"
            except Exception as e:  # an engine failing oddly must not sink the report
                out[backend] = f"not probed: {who} probe failed unexpectedly: {key_line(str(e))}"
    return out


