"""edgesdk.build.model: loading, checking, op census, parameters and FLOPs on real models."""
import onnx
import pytest

import edgesdk
from edgesdk.errors import EdgeSDKError, ModelError
from edgesdk.build.inspect import check, inspect
from edgesdk.build.model import count_flops, infer_shapes, load_model, parse_shape


def test_effnet_params_and_flops(effnet_onnx):
    r = inspect(effnet_onnx, probe=False)
    assert r.opset == 13
    assert r.inputs == [{"name": "images", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    # EfficientNet-Lite0: 4.65 M parameters and ~0.40 G multiply-adds (Conv + Gemm) at 224x224.
    assert 4.5e6 < r.params < 4.8e6
    assert r.flops is not None and 0.38e9 < r.flops < 0.42e9
    assert r.flops_uncounted == []
    assert r.ops["Conv"] > 40 and "Pad" not in r.ops


def test_flops_match_torch_flop_counter(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    nn = torch.nn
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
        nn.Flatten(), nn.Linear(8 * 32 * 32, 10),
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    with FlopCounterMode(display=False) as fc:
        m(x)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, x, str(path), opset_version=13, input_names=["x"], dynamo=False)
    total, missing = count_flops(infer_shapes(load_model(path)))
    assert missing == []
    assert total == fc.get_total_flops() // 2  # torch counts a multiply-add as 2


def test_dynamic_dims_named_and_shape_flag(ppocr_rec_onnx, ppocr_det_onnx):
    rec = inspect(ppocr_rec_onnx, probe=False)
    (x,) = rec.inputs
    assert x["shape"][1:3] == [3, 48] and isinstance(x["shape"][3], str)
    assert x["name"] in rec.dynamic_inputs()
    assert rec.params > 1e6  # weights live in Constant nodes and are still counted

    det = inspect(ppocr_det_onnx, probe=False)
    assert det.flops is None  # dynamic H, W: nothing can be counted without --shape
    name = det.inputs[0]["name"]
    sized = inspect(ppocr_det_onnx, shapes={name: (1, 3, 640, 640)}, probe=False)
    assert sized.flops and sized.flops > 1e8 and sized.flops_uncounted == []
    assert sized.inputs[0]["shape"] != [1, 3, 640, 640]  # the report shows the model as declared


def test_shape_flag_errors(effnet_onnx):
    with pytest.raises(ModelError, match="no input named 'x'"):
        inspect(effnet_onnx, shapes={"x": (1, 3, 224, 224)}, probe=False)
    with pytest.raises(ModelError, match="rank 4"):
        inspect(effnet_onnx, shapes={"images": (1, 3, 224)}, probe=False)
    with pytest.raises(ModelError, match="fixed at"):
        inspect(effnet_onnx, shapes={"images": (1, 3, 320, 320)}, probe=False)
    for bad in ("images", "images=", "images=1x3xAx4", "=1x3", "images=1x0x2"):
        with pytest.raises(EdgeSDKError, match="bad --shape"):
            parse_shape(bad)
    assert parse_shape("x=1x3x8x8") == ("x", (1, 3, 8, 8))


def test_shape_inference_fills_output(two_transpose_onnx):
    m = onnx.load(str(two_transpose_onnx))
    assert not m.graph.output[0].type.tensor_type.HasField("shape")
    result = check(two_transpose_onnx)
    assert result["valid"] and result["outputs"][0]["shape"] and all(
        isinstance(d, int) for d in result["outputs"][0]["shape"])


def test_onnx_ml_census(sklearn_onnx):
    r = inspect(sklearn_onnx, probe=False)
    assert "ai.onnx.ml:LinearClassifier" in r.ops and "ai.onnx.ml:ZipMap" in r.ops
    assert r.opsets.get("ai.onnx.ml")
    assert any(o["dtype"].startswith("seq(") for o in r.outputs)  # ZipMap's sequence of maps


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"\x00\xff garbage \x13\x37" * 50, "ONNX"),
])
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        load_model(p)


def test_truncated_missing_and_directory(tmp_path, effnet_onnx):
    p = tmp_path / "cut.onnx"
    p.write_bytes(effnet_onnx.read_bytes()[: 100_000])
    with pytest.raises(ModelError, match="cut.onnx"):
        load_model(p)
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="is a directory"):
        load_model(tmp_path)


def test_public_inspect(effnet_onnx):
    assert edgesdk.inspect(effnet_onnx, probe=False).params > 0
