"""Models as users export them: the exporter's own metadata (Ultralytics, PaddleOCR, ours) fills what the
target profile leaves open, each setting saying where it came from; a model that carries nothing is
packaged with today's defaults and a loud note."""
import json
import os
import subprocess
import sys

import onnx
import pytest

import edgesdk
from edgesdk.build.exporters import read_exporter
from edgesdk.errors import EdgeSDKError
from test_bundle import OCR_PROFILE as _OCR_PROFILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgesdk", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=REPO)


def _with_props(src, dest, **props):
    m = onnx.load(str(src))
    keep = [p for p in m.metadata_props if p.key not in props]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for k, v in props.items():
        if v is not None:
            m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dest))
    return dest


def test_ultralytics_metadata_read_as_its_exporter_writes_it(yolo_ultralytics_onnx):
    m = onnx.load(str(yolo_ultralytics_onnx))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["names"].startswith("{0: 'person', 1: 'bicycle'")  # str() of a dict, not JSON
    assert props["imgsz"] == "[320, 320]"
    info = read_exporter(m)
    assert info.exporter == "ultralytics"
    assert info.labels == ["person", "bicycle", "car", "cat", "dog"]
    assert info.postprocess == {"kind": "yolo", "format": "v8"}
    assert info.preprocess == {"resize": "letterbox", "pad": 114, "color": "rgb", "mean": [0.0] * 3,
                               "std": [255.0] * 3, "size": [320, 320]}
    assert "Ultralytics" in info.sources["preprocess"] and "imgsz [320, 320]" in info.sources["preprocess"]


def test_ultralytics_detector_packaged_and_run_with_its_names(tmp_path, yolo_ultralytics_onnx, real_images):
    """A built-in profile with no [preprocess]/[postprocess] and no [inputs]: input [batch, 3, height, width]
    fixed to 1x3x320x320 from imgsz, letterbox /255 RGB and the YOLOv8 decode from the metadata."""
    out = tmp_path / "yolo"
    res = _cli("package", yolo_ultralytics_onnx, "--target", "x86-openvino", "--out", out,
               "--calib", real_images["skimage_astronaut"])
    assert res.returncode == 0, res.stderr
    assert "fixed to [1, 3, 320, 320]" in res.stderr and "preprocess from Ultralytics metadata" in res.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["inputs"][0]["shape"] == [1, 3, 320, 320]
    pre = man["preprocess"]
    assert (pre["resize"], pre["pad"], pre["color"], pre["std"], pre["mean"], pre["size"]) == \
        ("letterbox", 114, "rgb", [255.0] * 3, [0.0] * 3, [320, 320])
    assert man["postprocess"]["kind"] == "yolo"
    assert (out / "labels.txt").read_text().split("\n")[:5] == ["person", "bicycle", "car", "cat", "dog"]
    assert any(line.startswith("labels from Ultralytics metadata") for line in man["settings_from"])
    assert man["validation"]["passed"]

    photos = [real_images[n] for n in ("matplotlib_grace_hopper", "skimage_astronaut", "skimage_coffee")]
    run = _cli("run", out, *photos, "--json")
    assert run.returncode == 0, run.stderr
    dets = [d for r in json.loads(run.stdout)["results"] for d in r["detections"]]
    assert dets, "the detector found nothing on three photos"
    assert {d["label"] for d in dets} <= {"person", "bicycle", "car", "cat", "dog"}
    assert all(d["label"] == ["person", "bicycle", "car", "cat", "dog"][d["class"]] for d in dets)
    # the same detections as onnxruntime on the letterboxed photo, decoded by the same post-processor
    import numpy as np
    import onnxruntime as ort

    from edgesdk.device import postprocess
    from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference, read_image

    spec = PreprocessSpec.from_dict(pre)
    frame = read_image(photos[0])
    ref = ort.InferenceSession(str(yolo_ultralytics_onnx), providers=["CPUExecutionProvider"])
    raw = ref.run(None, {"images": preprocess_reference(frame, spec)})[0]
    want = postprocess.get("yolo", {}, ["person", "bicycle", "car", "cat", "dog"])({"output0": raw}, frame.shape, spec)
    got = json.loads(run.stdout)["results"][0]["detections"]
    assert [d["label"] for d in got] == [d["label"] for d in want["detections"]]
    np.testing.assert_allclose([d["box"] for d in got], [d["box"] for d in want["detections"]], atol=2.0)
    human = _cli("run", out, photos[0])
    assert human.returncode == 0 and got[0]["label"] in human.stdout, human.stdout


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_ultralytics_tasks_we_do_not_decode_are_refused_by_name(tmp_path, yolo_ultralytics_onnx, task):
    model = _with_props(yolo_ultralytics_onnx, tmp_path / f"{task}.onnx", task=task)
    with pytest.raises(EdgeSDKError, match=f"Ultralytics task '{task}' is not decoded.*kind = \"none\""):
        edgesdk.package(model, "x86-openvino", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_ultralytics_end_to_end_head_refused(tmp_path, yolo_ultralytics_onnx):
    model = _with_props(yolo_ultralytics_onnx, tmp_path / "e2e.onnx", names="{0: 'person', 1: 'car'}")
    with pytest.raises(EdgeSDKError, match=r"not the YOLOv8 head \[1, 4 \+ 2, N\]"):
        edgesdk.package(model, "x86-openvino", tmp_path / "b")


def test_bad_ultralytics_metadata_named(tmp_path, yolo_ultralytics_onnx):
    model = _with_props(yolo_ultralytics_onnx, tmp_path / "bad.onnx", names="{0: 'person', 1: car}")
    with pytest.raises(EdgeSDKError, match="'names' is not a Python literal"):
        edgesdk.package(model, "x86-openvino", tmp_path / "b")


def test_paddle_character_becomes_ctc_labels(ppocr_rec_onnx, ppocr_keys):
    info = read_exporter(onnx.load(str(ppocr_rec_onnx)))
    assert info.labels == ppocr_keys and len(info.labels) == 6625  # blank, 6623 characters, space
    assert info.postprocess == {"kind": "ppocr-rec"}
    assert "blank first, space last" in info.sources["labels"]


def test_paddle_character_count_mismatch_named(tmp_path, ppocr_rec_onnx):
    chars = {p.key: p.value for p in onnx.load(str(ppocr_rec_onnx)).metadata_props}["character"].split("\n")
    model = _with_props(ppocr_rec_onnx, tmp_path / "rec.onnx", character="\n".join(chars[:-5]))
    with pytest.raises(EdgeSDKError, match="6618 characters: with CTC's blank and a space that is 6620 classes, "
                                           "but output 'softmax_11.tmp_0' has 6625"):
        read_exporter(onnx.load(str(model)))


# test_bundle's OCR profile without its [postprocess] table
OCR_PROFILE = _OCR_PROFILE.split("[postprocess]")[0]


def test_paddle_rec_without_labels_reads_the_page(tmp_path, ppocr_det_onnx, ppocr_rec_onnx, text_image,
                                                 reads_the_page):
    """No --labels, no [preprocess]/[postprocess]: det and rec conventions and the CTC labels from the models."""
    det_toml, rec_toml = tmp_path / "det.toml", tmp_path / "rec.toml"
    det_toml.write_text(OCR_PROFILE.format(name="ocr-det", min=[1, 3, 32, 32], opt=[1, 3, 640, 640],
                                           max=[1, 3, 1280, 1280]))
    rec_toml.write_text(OCR_PROFILE.format(name="ocr-rec", min=[1, 3, 48, 16], opt=[1, 3, 48, 320],
                                           max=[8, 3, 48, 2048]))
    for model, toml, name in ((ppocr_det_onnx, det_toml, "det"), (ppocr_rec_onnx, rec_toml, "rec")):
        res = _cli("package", model, "--target", toml, "--out", tmp_path / name, "--calib", text_image)
        assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert rec["postprocess"]["kind"] == "ppocr-rec" and rec["preprocess"]["color"] == "bgr"
    assert json.loads((tmp_path / "det" / "manifest.json").read_text())["postprocess"]["kind"] == "ppocr-det"
    res = _cli("run", tmp_path / "det", text_image, "--rec", tmp_path / "rec", "--json")
    assert res.returncode == 0, res.stderr
    text = json.loads(res.stdout)["results"][0]["text"]
    reads_the_page(text)


def test_model_without_metadata_gets_the_default_and_a_loud_note(tmp_path, effnet_dynamic_onnx, real_images):
    res = _cli("package", effnet_dynamic_onnx, "--target", "x86-onnxruntime", "--out", tmp_path / "b",
               "--calib", real_images["skimage_coffee"], "--shape", "images=1x3x224x224")
    assert res.returncode == 0, res.stderr
    assert "WARNING: preprocessing GUESSED" in res.stderr
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["preprocess"]["mean"] == [123.675, 116.28, 103.53] and man["postprocess"] == {"kind": "none"}
    assert any("GUESSED" in line for line in man["settings_from"])
