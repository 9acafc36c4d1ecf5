"""Models exported with a dynamic batch, packaged from profiles that give no [inputs] (and, for int8, no
[quantize]): the batch becomes 1, the spatial dims come from the preprocessing size, int8 gets the
shipped int8 profiles' budget judged on the photos fp32 decides, and the figures land in the manifest."""
import json

import pytest

import edgesdk
from edgesdk.errors import EdgeSDKError

EFFNET_PROFILE = """schema = 1
name = "effnet-{engine}-{precision}"
engine = "{engine}"
precision = "{precision}"
arch = "x86_64"
[preprocess]
size = [224, 224]
mean = [127.0, 127.0, 127.0]
std = [128.0, 128.0, 128.0]
"""


@pytest.mark.parametrize("engine", ["openvino", "ncnn"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_dynamic_batch_classifier_without_inputs_or_quantize(tmp_path, effnet_dynamic_onnx, real_images, engine,
                                                             precision):
    toml = tmp_path / "p.toml"
    toml.write_text(EFFNET_PROFILE.format(engine=engine, precision=precision))
    photos = sorted(real_images.values())
    calib = photos if precision == "int8" else photos[:8]
    man = edgesdk.package(effnet_dynamic_onnx, toml, tmp_path / "b", calib=calib).manifest
    assert man["inputs"][0]["shape"] == [1, 3, 224, 224]
    assert any("'images' ['batch', 3, 224, 224] fixed to [1, 3, 224, 224]: batch 'batch' -> 1" in line
               for line in man["settings_from"]), man["settings_from"]
    assert man["preprocess"]["mean"] == [127.0] * 3  # the profile's, not the default's
    v = man["validation"]
    assert v["outputs"] and v["cosine_min"] is not None
    if precision == "fp32":
        assert v["passed"] and v["cosine_min"] > 0.9999
        assert man["quantization"] is None
        return
    q = man["quantization"]
    assert q["budget"] == {"max_top1_drop": 0.01, "min_cosine": None, "top1_margin": 0.1}
    assert any("the shipped int8 profiles' default" in line for line in man["settings_from"])
    check = q["steps"][-1]["check"]
    assert check["passed"] and check["folds"] == 2 and check["samples"] == len(photos)
    assert 0 < check["decided"] <= check["samples"] and check["flips"] <= 0.01 * check["decided"]
    assert check["cosine_mean"] > 0.99 and check["cosine_min"] > 0.9
    assert q["calibration_images"] == min(100, len(photos))


@pytest.mark.parametrize("engine", ["openvino", "ncnn"])
def test_ppocr_rec_without_inputs(tmp_path, ppocr_rec_onnx, text_image, engine):
    """[N, 3, 48, W] with no [inputs]: batch 1 and PaddleOCR's rec width 320; the bundle reads a line.
    On ncnn, slimming at the fixed shape folds the attention's shape arithmetic into reshapes pnnx cannot
    lower: package retries on the graph slimmed with dynamic dims."""
    from edgesdk.device.preprocess import read_image

    toml = tmp_path / "rec.toml"
    toml.write_text(f'schema = 1\nname = "rec"\nengine = "{engine}"\nprecision = "fp32"\narch = "x86_64"\n')
    res = edgesdk.package(ppocr_rec_onnx, toml, tmp_path / "b", calib=[text_image])
    man = res.manifest
    assert man["inputs"][0]["shape"] == [1, 3, 48, 320] and man["backend"] == engine
    assert man["validation"]["passed"] and man["postprocess"]["kind"] == "ppocr-rec"
    assert any("width 'p2o.DynamicDimension.1' -> 320" in line for line in man["settings_from"])
    heading = read_image(text_image)[4:36, :300]  # the page's heading line
    with edgesdk.load(res.out) as model:
        assert model(heading)["text"][0] == "Region-based segmentation"


def test_shape_overrides_and_undetermined_dims_named(tmp_path, effnet_dynamic_onnx, ppocr_det_onnx, real_images):
    toml = tmp_path / "p.toml"
    toml.write_text(EFFNET_PROFILE.format(engine="onnxruntime", precision="fp32"))
    man = edgesdk.package(effnet_dynamic_onnx, toml, tmp_path / "b", calib=[real_images["skimage_coffee"]],
                          shapes={"images": (1, 3, 224, 224)}).manifest
    assert man["inputs"][0]["shape"] == [1, 3, 224, 224]
    assert not any("fixed to" in line for line in man["settings_from"])
    # PP-OCR det: [N, 3, H, W] and nothing says H and W
    with pytest.raises(EdgeSDKError, match=r"input 'x' .*nothing determines dims \['p2o.DynamicDimension.1', "
                                           r"'p2o.DynamicDimension.2'\].*--shape x=1x3x\?x\?"):
        edgesdk.package(ppocr_det_onnx, "x86-openvino", tmp_path / "det")


@pytest.mark.parametrize("engine", ["openvino", "ncnn"])
def test_ppocr_rec_int8_without_inputs_or_quantize(tmp_path, ppocr_rec_onnx, text_image, engine):
    """PP-OCRv4 rec int8 from a profile with no [inputs] and no [quantize], calibrated on nine lines of
    the page. Its output is class probabilities per time step, so the default budget judges top-1 on the
    time steps fp32 decides (the text read). OpenVINO's convert_model fuses each Conv with its batch norm
    and renames it: the default float layers (stem, depthwise) are found through the graph. On ncnn,
    KL ranges from nine lines clip (measured 24 of 347 decided steps flipped): the stage tries min/max
    before keeping layers in float, and ranks only layers ncnn runs in int8 (pnnx makes the attention's
    MatMuls float Gemm/MultiHeadAttention layers)."""
    import cv2

    from edgesdk.device.preprocess import read_image

    page = cv2.imread(str(text_image))
    lines = []
    for k, y in enumerate(range(40, 161, 15)):  # nine overlapping lines of the page's paragraph
        lines.append(tmp_path / f"line{k}.png")
        cv2.imwrite(str(lines[-1]), page[y:y + 28])
    toml = tmp_path / "rec.toml"
    toml.write_text(f'schema = 1\nname = "rec"\nengine = "{engine}"\nprecision = "int8"\narch = "x86_64"\n')
    res = edgesdk.package(ppocr_rec_onnx, toml, tmp_path / "b", calib=lines)
    man = res.manifest
    assert man["inputs"][0]["shape"] == [1, 3, 48, 320] and (tmp_path / "b" / "manifest.json").is_file()
    q, v = man["quantization"], man["validation"]
    assert "p2o.Conv.1" in q["float_layers"] and len(q["float_layers"]) == 15, q["float_layers"]
    assert not any("stays int8" in n for n in q["notes"]), q["notes"]
    assert q["budget"] == {"max_top1_drop": 0.01, "min_cosine": None, "top1_margin": 0.1}
    check = q["steps"][-1]["check"]
    assert check["passed"] and check["per"] == "time step" and check["folds"] == 2 and check["samples"] == 9
    assert check["decided"] > 9 * 20 and check["flips"] <= 0.01 * check["decided"], check  # 40 steps a line
    assert q["steps"][-1]["method"] == q["method"]
    if engine == "ncnn":
        assert [s["method"] for s in q["steps"][:2]] == ["kl", "minmax"], q["steps"]
        assert q["steps"][0]["check"]["flips"] > q["steps"][1]["check"]["flips"]
    assert v["outputs"] and 0.95 < v["cosine_min"] <= 1.0 and v["max_abs"] is not None, v
    assert v["passed"] == all(o["passed"] for o in v["outputs"]), v
    with edgesdk.load(res.out) as model:
        assert model(read_image(text_image)[4:36, :300])["text"][0] == "Region-based segmentation"
    print(json.dumps({"check": check, "steps": [(s["method"], len(s["float_nodes"])) for s in q["steps"]],
                      "fallback": q["fallback"], "validation": {k: v[k] for k in ("cosine_min", "max_abs", "passed")}}))
