"""Simplify an ONNX model and fix the shapes of its dynamic inputs for one build.

Build side: imports onnx and onnxslim (lazily). The steps: load + check, fix the named inputs'
dims, shape inference, onnxslim (constant folding, which also turns Paddle's Constant-node
weights into initializers, dead-node removal, fusions), shape inference again, checker, atomic save.
save_model_atomically writes ONNX files through edgesdk.atomic, like every other write.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesdk.atomic import staged_file
from edgesdk.errors import ConversionError, EdgeSDKError, ModelError
from edgesdk.build.model import dim_values, fix_input_shapes, graph_inputs, infer_shapes, load_model


@dataclass(frozen=True)
class OptimizeResult:
    path: Path
    nodes_before: int
    nodes_after: int


def optimize(
    model_path: str | Path,
    out_path: str | Path,
    shapes: dict[str, tuple[int, ...]] | None = None,
    keep_dynamic: bool = True,
) -> OptimizeResult:
    """Write a simplified copy of `model_path` to `out_path`, with `shapes` fixing the named inputs.

    Inputs not named in `shapes` keep their dynamic dims when `keep_dynamic`; otherwise any dim
    left dynamic is a ModelError naming the inputs that still need a shape.
    """
    model_path, out_path = Path(model_path), Path(out_path)
    model = load_model(model_path)
    nodes_before = len(model.graph.node)

    if shapes:
        _check_shape_values(shapes, model_path)
        fix_input_shapes(model, shapes, source=model_path)
        # Stale intermediate shapes from the dynamic model would contradict the fixed ones.
        del model.graph.value_info[:]
    if not keep_dynamic:
        dynamic = {
            i.name: dim_values(i.type)
            for i in graph_inputs(model)
            if not all(isinstance(d, int) for d in dim_values(i.type))
        }
        if dynamic:
            raise ModelError(
                f"{model_path}: inputs still have dynamic dims and keep_dynamic is off: {dynamic}; "
                "give each a fixed shape")

    model = infer_shapes(model, source=model_path)
    model = _slim(model, model_path)
    model = infer_shapes(model, source=model_path)
    _check(model, model_path)
    save_model_atomically(model, out_path)
    return OptimizeResult(out_path, nodes_before, len(model.graph.node))


def _check_shape_values(shapes: dict, source: Path) -> None:
    for name, shape in shapes.items():
        if not isinstance(shape, (tuple, list)) or not shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ModelError(f"{source}: shape for input {name!r} must be positive integers, got {shape!r}")


def _slim(model, source: Path):
    try:
        import onnxslim
    except ImportError:
        raise EdgeSDKError("optimizing needs onnxslim: pip install 'edgesdk[build]'") from None
    # onnxslim rewrites sequence/map output types (skl2onnx's ZipMap) into invalid ones: keep the originals.
    non_tensor = {o.name: o.type for o in model.graph.output if o.type.WhichOneof("value") != "tensor_type"}
    try:
        slimmed = onnxslim.slim(model)
    except Exception as e:
        raise ConversionError(f"{source}: onnxslim failed: {e}") from e
    if slimmed is None:
        raise ConversionError(f"{source}: onnxslim returned no model")
    for o in slimmed.graph.output:
        if o.name in non_tensor:
            o.type.CopyFrom(non_tensor[o.name])
    return slimmed


def _check(model, source: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ConversionError(f"{source}: the optimized model fails the ONNX checker: {e}") from e


# ---------------------------------------------------------------------------- atomic writes

def save_model_atomically(model, path: str | Path) -> Path:
    """onnx.save to a temp file beside `path`, then rename: readers never see half a model."""
    import onnx

    path = Path(path)
    with staged_file(path) as tmp:  # created by onnx.save with the usual umask permissions
        try:
            onnx.save(model, tmp)
        except ValueError as e:  # protobuf's 2 GB limit
            raise ModelError(f"{path}: cannot write the model: {e}") from e
    return path
