"""`inspect`: an ONNX model's I/O, op census, parameters, FLOPs and per-backend compatibility, as a
report (ModelReport) and as text. Build side."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.build.compat import BackendCompat, check_compat, format_compat
from edgesdk.build.model import (all_nodes, count_flops, count_params, fix_input_shapes, graph_inputs, infer_shapes,
                                 io_dicts, load_model, op_census)

@dataclass
class ModelReport:
    path: str
    ir_version: int
    opset: int
    opsets: dict[str, int]
    producer: str
    inputs: list[dict]
    outputs: list[dict]
    ops: dict[str, int]
    nodes: int
    params: int
    flops: int | None
    flops_uncounted: list[str]
    shapes: dict[str, list[int]]
    compat: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ir_version": self.ir_version,
            "opset": self.opset,
            "opsets": self.opsets,
            "producer": self.producer,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "ops": self.ops,
            "nodes": self.nodes,
            "params": self.params,
            "flops": self.flops,
            "flops_uncounted": self.flops_uncounted,
            "shapes": self.shapes,
            "compat": self.compat,
        }

    def dynamic_inputs(self) -> dict[str, list[str]]:
        return {
            i["name"]: [str(d) for d in i["shape"] if not isinstance(d, int)]
            for i in self.inputs
            if any(not isinstance(d, int) for d in i["shape"])
        }


def inspect(model: str | Path, shapes: dict[str, tuple[int, ...]] | None = None, probe: bool = True) -> ModelReport:
    """Check and describe the ONNX file `model` (edgesdk.inspect). `shapes` fixes dynamic inputs for
    FLOP counting; `probe` lets the compatibility report try installed engines for real."""
    path = model
    model = load_model(path)
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    inputs = io_dicts(graph_inputs(model))  # as declared, before any --shape
    inferred = infer_shapes(model, source=path)
    outputs = io_dicts(inferred.graph.output)
    if shapes:
        sized = infer_shapes(fix_input_shapes(inferred, shapes, source=path), source=path)
    else:
        sized = inferred
    flops, uncounted = count_flops(sized)
    compat = check_compat(inferred, model_path=Path(path), shapes=shapes, probe=probe)
    return ModelReport(
        path=str(path),
        ir_version=int(model.ir_version),
        opset=opsets.get("ai.onnx", 0),
        opsets=opsets,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=inputs,
        outputs=outputs,
        ops=op_census(model),
        nodes=sum(1 for _ in all_nodes(model.graph)),
        params=count_params(model),
        flops=flops,
        flops_uncounted=uncounted,
        shapes={k: list(v) for k, v in (shapes or {}).items()},
        compat={k: v.to_dict() for k, v in compat.items()},
    )


def check(path: str | Path) -> dict[str, Any]:
    """`edgesdk check`: the ONNX checker plus strict shape inference; ModelError with the message if invalid."""
    model = load_model(path)
    inferred = infer_shapes(model, strict=True, source=path)
    return {"path": str(path), "valid": True, "outputs": io_dicts(inferred.graph.output)}


def format_report(r: ModelReport) -> str:
    """The human form of `edgesdk inspect`."""
    def shape(s):
        return "[" + ", ".join(str(d) for d in s) + "]"

    lines = [
        f"model     {r.path}",
        f"producer  {r.producer or '-'}   ir {r.ir_version}   opsets "
        + ", ".join(f"{d} {v}" for d, v in r.opsets.items()),
        f"params    {r.params:,} ({r.params / 1e6:.2f} M)",
    ]
    if r.flops is None:
        lines.append("flops     unknown: dynamic shapes; give --shape NAME=1x3xHxW")
    else:
        extra = f"  ({len(r.flops_uncounted)} nodes with dynamic shapes not counted)" if r.flops_uncounted else ""
        at = f" at {', '.join(f'{k}={shape(v)}' for k, v in r.shapes.items())}" if r.shapes else ""
        lines.append(f"flops     {r.flops / 1e9:.3f} G (multiply-add = 1){at}{extra}")
    lines.append("")
    lines.append("inputs")
    for t in r.inputs:
        lines.append(f"  {t['name']:<24} {shape(t['shape']):<24} {t['dtype']}")
    lines.append("outputs")
    for t in r.outputs:
        lines.append(f"  {t['name']:<24} {shape(t['shape']):<24} {t['dtype']}")
    lines.append("")
    lines.append(f"ops ({r.nodes} nodes)")
    items = list(r.ops.items())
    for i in range(0, len(items), 3):
        lines.append("  " + "".join(f"{op:<26}{n:>5}   " for op, n in items[i:i + 3]).rstrip())
    lines.append("")
    lines.append(format_compat({k: BackendCompat(**v) for k, v in r.compat.items()}))
    return "\n".join(lines)
