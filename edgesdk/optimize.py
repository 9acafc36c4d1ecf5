"""Simplify an ONNX model and fix the shapes of its dynamic inputs for one build.

Build side: imports onnx and onnxslim (lazily). The steps: load + check, fix the named inputs'
dims, shape inference, onnxslim (constant folding, which also turns Paddle's Constant-node
weights into initializers, dead-node removal, fusions), shape inference again, checker, atomic save.
Also holds the atomic-write helpers the converters share.
"""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .backends.base import ARTIFACT_FILE
from .errors import ConversionError, EdgeSDKError, ModelError
from .model import dim_values, fix_input_shapes, graph_inputs, infer_shapes, load_model


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

def _temp_name(path: Path) -> str:
    return f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


def save_model_atomically(model, path: str | Path) -> Path:
    """onnx.save to a temp file beside `path`, then rename: readers never see half a model."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_temp_name(path))  # created by onnx.save with the usual umask permissions
    try:
        try:
            onnx.save(model, tmp)
        except ValueError as e:  # protobuf's 2 GB limit
            raise ModelError(f"{path}: cannot write the model: {e}") from e
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextmanager
def staged_dir(out_dir: str | Path):
    """Yield an empty temp dir beside `out_dir`; when the block succeeds it takes `out_dir`'s place.

    An existing `out_dir` is replaced only if it is empty, a previous artifact (artifact.json) or bundle (manifest.json),
    so a mistyped path cannot wipe unrelated files. On failure the temp dir is removed.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConversionError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not any((out_dir / f).exists() for f in (ARTIFACT_FILE, "manifest.json")):
            raise ConversionError(f"{out_dir}: directory is not empty and holds no {ARTIFACT_FILE} or manifest.json "
                                  "(not an earlier artifact or bundle); refusing to overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(_temp_name(out_dir))
    tmp.mkdir()  # not mkdtemp: its 0700 mode would end up on the artifact directory
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(_temp_name(out_dir))
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
