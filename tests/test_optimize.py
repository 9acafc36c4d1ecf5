"""edgesdk.build.optimize on the real models: folding, shape fixing, errors, and outputs unchanged vs onnxruntime."""
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from edgesdk.backends.onnxruntime.session import reference_session
from edgesdk.errors import ConversionError, ModelError
from edgesdk.build.model import dim_values
from edgesdk.atomic import staged_dir
from edgesdk.build.optimize import optimize


def page_input(image, h: int, w: int) -> np.ndarray:
    """A scanned page as a PP-OCR det input: stretched, ImageNet-normalised, NCHW."""
    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    x = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    x = (x - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def assert_same_outputs(original: Path, optimized: Path, feeds: dict) -> float:
    """Both files on onnxruntime; max abs difference must be < 1e-5 of the output's scale."""
    ref = reference_session(original).run(feeds)
    got = reference_session(optimized).run(feeds)
    assert list(got) == list(ref)
    worst = 0.0
    for name, r in ref.items():
        assert got[name].shape == r.shape, name
        diff = float(np.max(np.abs(got[name] - r)))
        assert diff <= 1e-5 * max(1.0, float(np.max(np.abs(r)))), (name, diff)
        worst = max(worst, diff)
    return worst


def io_shapes(path: Path) -> dict:
    m = onnx.load(str(path))
    return {v.name: dim_values(v.type) for v in list(m.graph.input) + list(m.graph.output)}


def test_ppocr_det_constants_folded_and_dynamic_kept(ppocr_det_onnx, text_image, tmp_path):
    before = onnx.load(str(ppocr_det_onnx))
    assert len(before.graph.initializer) == 0  # Paddle export: every weight is a Constant node
    res = optimize(ppocr_det_onnx, tmp_path / "det.onnx")
    after = onnx.load(str(res.path))
    assert res.nodes_before == len(before.graph.node)
    assert res.nodes_after == len(after.graph.node) < res.nodes_before
    assert len(after.graph.initializer) > 50
    assert not any(n.op_type == "Constant" for n in after.graph.node)
    shapes = io_shapes(res.path)
    assert isinstance(shapes["x"][2], str) and isinstance(shapes["x"][3], str)  # H, W still dynamic
    # Same outputs at two sizes, on a text image that makes the detector fire.
    for h, w in ((320, 320), (480, 640)):
        feeds = {"x": page_input(text_image, h, w)}
        assert reference_session(res.path).run(feeds)["sigmoid_0.tmp_0"].max() > 0.9
        assert_same_outputs(ppocr_det_onnx, res.path, feeds)


def test_ppocr_rec_fixed_width(ppocr_rec_onnx, tmp_path):
    res = optimize(ppocr_rec_onnx, tmp_path / "rec.onnx", shapes={"x": (1, 3, 48, 320)})
    shapes = io_shapes(res.path)
    assert shapes["x"] == [1, 3, 48, 320]
    assert shapes["softmax_11.tmp_0"] == [1, 40, 6625]  # the fixed width propagates to the output
    assert len(onnx.load(str(res.path)).graph.initializer) > 50
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 320)).astype(np.float32)
    assert_same_outputs(ppocr_rec_onnx, res.path, {"x": x})


def test_effnet_outputs_unchanged(effnet_onnx, effnet_preprocess, eval_images, tmp_path):
    from tools.models import to_input

    res = optimize(effnet_onnx, tmp_path / "effnet.onnx", keep_dynamic=False)
    assert res.nodes_after <= res.nodes_before
    for image in eval_images[:5]:
        assert_same_outputs(effnet_onnx, res.path, {"images": to_input(image, effnet_preprocess)})


def test_in_place_and_onnx_ml(sklearn_onnx, tmp_path):
    # ZipMap's sequence-of-maps output must survive simplification, and out == in is allowed.
    path = tmp_path / "iris.onnx"
    path.write_bytes(Path(sklearn_onnx).read_bytes())
    optimize(path, path)
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float32)
    ref = reference_session(sklearn_onnx).run({"input": x})
    got = reference_session(path).run({"input": x})
    np.testing.assert_array_equal(got["output_label"], ref["output_label"])
    assert got["output_probability"] == ref["output_probability"]


@pytest.mark.parametrize("shapes, needles", [
    ({"images": (1, 3, 224, 224)}, ["no input named 'images'", "['x']"]),
    ({"x": (1, 3, 320)}, ["rank 4", "[1, 3, 320]"]),
    ({"x": (1, 4, 320, 320)}, ["fixed at", "[1, 4, 320, 320]"]),
    ({"x": (1, 3, 0, 320)}, ["positive integers", "(1, 3, 0, 320)"]),
])
def test_shape_errors(ppocr_det_onnx, tmp_path, shapes, needles):
    out = tmp_path / "det.onnx"
    with pytest.raises(ModelError) as e:
        optimize(ppocr_det_onnx, out, shapes=shapes)
    for n in needles:
        assert n in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_keep_dynamic_off_needs_every_shape(ppocr_det_onnx, tmp_path):
    with pytest.raises(ModelError, match="keep_dynamic.*'x'"):
        optimize(ppocr_det_onnx, tmp_path / "det.onnx", keep_dynamic=False)
    res = optimize(ppocr_det_onnx, tmp_path / "det.onnx", shapes={"x": (1, 3, 320, 320)}, keep_dynamic=False)
    assert io_shapes(res.path)["sigmoid_0.tmp_0"] == [1, 1, 320, 320]


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        optimize(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not a model at all")
    with pytest.raises(ModelError, match="junk.onnx"):
        optimize(junk, tmp_path / "out.onnx")


def test_staged_dir_replaces_only_artifact_dirs(tmp_path):
    out = tmp_path / "art"
    with staged_dir(out) as d:
        (d / "artifact.json").write_text("{}")
        (d / "a").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a", "artifact.json"]
    with staged_dir(out) as d:  # a previous artifact is replaced whole
        (d / "artifact.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["artifact.json"]
    with pytest.raises(RuntimeError):  # a failing build leaves the old artifact and no temp dir
        with staged_dir(out) as d:
            (d / "half").write_text("x")
            raise RuntimeError("converter died")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert sorted(p.name for p in out.iterdir()) == ["artifact.json"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="refusing to overwrite"):
        with staged_dir(mine):
            pass
    assert (mine / "notes.txt").read_text() == "keep me"
