"""tools.models: the real test models, labels, photos and seed cases are what they claim to be."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tools import models

REPO_ROOT = Path(__file__).resolve().parents[1]

OPENCV_DOC = models.OPENCV_DOC_EXAMPLES.is_dir()
needs_opencv_doc = pytest.mark.skipif(not OPENCV_DOC, reason="Debian's opencv-doc is not installed")

# Photos whose ImageNet class is not in doubt: name -> accepted class indices.
LABELLED = {
    "skimage_coffee": [967],  # espresso
    "skimage_chelsea": list(range(281, 286)),  # domestic cats
    "opencv_data_squirrel_cls": [335],  # fox squirrel
    "opencv_data_baboon": [372],
    "opencv_data_apple": [948],  # Granny Smith
    "opencv_data_orange": [950],
    "opencv_data_butterfly": [323],  # monarch
    "opencv_dnn_superres_butterfly": [323],
    "opencv_data_messi5": [805],  # soccer ball
    "sklearn_flower": [985],  # daisy
    "matplotlib_grace_hopper": [652],  # military uniform
}


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def dims(value_info):
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


# --- EfficientNet-Lite0 -----------------------------------------------------------------------


def test_effnet_graph(effnet_onnx):
    m = onnx.load(str(effnet_onnx))
    onnx.checker.check_model(m)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 13)]
    assert [i.name for i in m.graph.input] == ["images"] and dims(m.graph.input[0]) == [1, 3, 224, 224]
    assert [o.name for o in m.graph.output] == ["logits"] and dims(m.graph.output[0]) == [1, 1000]
    ops = [n.op_type for n in m.graph.node]
    # The Pad chains are folded into the convolutions: ~94 nodes, ReLU6 as Clip, no swish.
    assert 90 <= len(ops) <= 100, len(ops)
    assert set(ops) == {"Conv", "Clip", "Add", "GlobalAveragePool", "Reshape", "Gemm"}
    assert ops.count("Conv") == 49 and ops.count("Clip") == 33
    params = sum(math.prod(t.dims) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert 4.55e6 < params < 4.7e6, params  # 4.63 M


def test_effnet_matches_torch(effnet_onnx, real_images, effnet_preprocess):
    torch = pytest.importorskip("torch")
    net = models.efficientnet_lite0_torch()
    sess = session(effnet_onnx)
    for name in ("skimage_chelsea", "skimage_astronaut", "sklearn_china"):
        x = models.to_input(real_images[name], effnet_preprocess)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"images": x})[0]
        assert np.abs(got - expected).max() < 1e-4, name


def test_effnet_calls_coffee_espresso_and_chelsea_a_cat(effnet_onnx, effnet_preprocess, imagenet_labels):
    import skimage.data

    sess = session(effnet_onnx)
    # skimage hands out RGB; frames (and to_input) are BGR.
    coffee = sess.run(None, {"images": models.to_input(skimage.data.coffee()[:, :, ::-1], effnet_preprocess)})[0][0]
    assert int(coffee.argmax()) == 967 and imagenet_labels[967] == "espresso"
    assert softmax(coffee)[967] > 0.8
    chelsea = sess.run(None, {"images": models.to_input(skimage.data.chelsea()[:, :, ::-1], effnet_preprocess)})[0][0]
    assert 281 <= int(chelsea.argmax()) <= 285, imagenet_labels[int(chelsea.argmax())]


def test_effnet_preprocess_is_the_measured_best(effnet_onnx, effnet_preprocess, real_images):
    """127/128 (TF Lite) beats the torchvision ImageNet mean/std on photos with an obvious class."""
    sess = session(effnet_onnx)
    available = {n: c for n, c in LABELLED.items() if n in real_images}
    assert len(available) >= 4

    def score(spec):
        right, p_right = 0, []
        for name, classes in available.items():
            p = softmax(sess.run(None, {"images": models.to_input(real_images[name], spec)})[0][0])
            right += int(p.argmax()) in classes
            p_right.append(p[classes].sum())
        return right, float(np.mean(p_right))

    right, mean_p = score(effnet_preprocess)
    assert right == len(available), (right, len(available))
    imagenet_right, imagenet_mean_p = score({**effnet_preprocess, **models.IMAGENET_MEAN_STD})
    assert imagenet_right <= right and imagenet_mean_p < mean_p - 0.03, (imagenet_mean_p, mean_p)


def test_imagenet_labels(imagenet_labels):
    assert len(imagenet_labels) == 1000
    assert imagenet_labels[0] == "tench, Tinca tinca"
    assert imagenet_labels[281] == "tabby, tabby cat"
    assert imagenet_labels[999] == "toilet tissue, toilet paper, bathroom tissue"
    assert all(label and label == label.strip() for label in imagenet_labels)


# --- PP-OCRv4 ---------------------------------------------------------------------------------


def test_ppocr_det_dynamic_and_fires_on_text(ppocr_det_onnx, text_image, real_images):
    sess = session(ppocr_det_onnx)
    (x,) = sess.get_inputs()
    assert x.name == "x" and x.shape[1] == 3 and all(isinstance(d, str) for d in (x.shape[0], x.shape[2], x.shape[3]))

    def text_fraction(path, size=(768, 384)):
        import cv2

        img = cv2.resize(models.read_bgr(path), size).astype(np.float32)
        blob = ((img / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()
        prob = sess.run(None, {"x": blob})[0]
        assert prob.shape == (1, 1, size[1], size[0])
        return float((prob > 0.3).mean())

    assert text_fraction(text_image) > 0.05  # a printed page: ~14 % text pixels
    assert text_fraction(text_image, size=(384, 192)) > 0.05  # another H, W: truly dynamic
    assert text_fraction(real_images["skimage_chelsea"]) < 0.01  # a cat: none


def test_ppocr_rec_shape_and_keys(ppocr_rec_onnx, ppocr_keys):
    sess = session(ppocr_rec_onnx)
    (x,) = sess.get_inputs()
    assert x.shape[1:3] == [3, models.PPOCR_REC_HEIGHT]
    assert isinstance(x.shape[0], str) and isinstance(x.shape[3], str)
    out = sess.run(None, {"x": np.zeros((2, 3, 48, 320), np.float32)})[0]
    assert out.shape == (2, 320 // 8, 6625)
    assert len(ppocr_keys) == out.shape[2]
    assert ppocr_keys[0] == "" and ppocr_keys[-1] == " "
    assert all(len(k) == 1 for k in ppocr_keys[1:])


@needs_opencv_doc
def test_ppocr_rec_reads_real_words(ppocr_rec_onnx, ppocr_keys, real_images):
    """Greedy CTC with ppocr_keys reads cropped words: proves the key order and the blank at 0."""
    import cv2

    sess = session(ppocr_rec_onnx)
    words = {"opencv_text_scenetext_word02": "HERE", "opencv_text_scenetext_word03": "riser",
             "opencv_text_scenetext_word04": "Produkt"}
    for name, word in words.items():
        img = models.read_bgr(real_images[name])
        width = math.ceil(48 * img.shape[1] / img.shape[0])
        blob = ((cv2.resize(img, (width, 48)).astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
        ids = sess.run(None, {"x": np.ascontiguousarray(blob)})[0][0].argmax(axis=1)
        text = "".join(ppocr_keys[i] for j, i in enumerate(ids) if i != 0 and (j == 0 or i != ids[j - 1]))
        assert text == word


# --- photos -----------------------------------------------------------------------------------


def test_images_are_real_3_channel_photos(real_images):
    import cv2

    if OPENCV_DOC:
        assert len(real_images) >= 40 and real_images.notes == []
    else:
        assert real_images.notes and any("opencv-doc" in n for n in real_images.notes)
    assert {"skimage_coffee", "skimage_chelsea", "skimage_camera", "sklearn_china", "sklearn_flower",
            "matplotlib_grace_hopper"} <= set(real_images)
    for name, path in real_images.items():
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 64, name
        assert len(np.unique(img[::4, ::4, 1])) > 16, name  # not a flat icon or mask


@needs_opencv_doc
def test_opencv_doc_drawings_left_out(real_images):
    assert "opencv_data_baboon" in real_images and "opencv_data_squirrel_cls" in real_images
    for drawing in ("opencv_data_opencv_logo", "opencv_data_pic1", "opencv_data_digits",
                    "opencv_shape_data_shape_sample_1", "opencv_text_scenetext_char01"):
        assert drawing not in real_images


def test_images_without_opencv_doc(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "OPENCV_DOC_EXAMPLES", tmp_path / "no-opencv-doc")
    imgs = models.images()
    assert len(imgs) >= 20 and not any(name.startswith("opencv_") for name in imgs)
    assert len(imgs.notes) == 1 and "opencv-doc" in imgs.notes[0]
    assert set(models.calibration_images()) | set(models.eval_images()) == set(imgs.values())


def test_images_come_from_the_cache_the_second_time(real_images, monkeypatch):
    def no_rebuild():
        raise AssertionError("images() decoded its sources again instead of reading its index")

    monkeypatch.setattr(models, "_image_sources", no_rebuild)
    again = models.images()
    assert dict(again) == dict(real_images) and again.notes == real_images.notes


def test_calibration_eval_split(real_images, calib_images, eval_images):
    calib, evals = set(calib_images), set(eval_images)
    assert calib and evals and not calib & evals
    assert calib | evals == set(real_images.values())
    assert 0.45 < len(calib) / len(real_images) < 0.75
    assert models.calibration_images() == calib_images and models.eval_images() == eval_images
    assert models.calibration_images(5) == calib_images[:5]
    assert len({p.name.split("_")[0] for p in calib_images[:20]}) >= 2  # a mix of sources
    with pytest.raises(ValueError, match="n=100000"):
        models.calibration_images(100000)


def test_text_image(text_image):
    import cv2

    img = cv2.imread(str(text_image), cv2.IMREAD_UNCHANGED)
    assert img.shape == (191, 384, 3)
    assert np.array_equal(img[:, :, 0], img[:, :, 2])  # a grey page stored as 3 channels


# --- seed cases -------------------------------------------------------------------------------


def test_linear_relu(linear_relu_onnx):
    m = onnx.load(str(linear_relu_onnx))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version == 11
    assert dims(m.graph.input[0]) == [1, 13] and m.graph.input[0].name == "input"
    assert m.graph.output[0].name == "output"
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    w = next(v for v in weights.values() if v.shape == (1, 13))
    b = next(v for v in weights.values() if v.shape == (1,))
    x = np.random.default_rng(0).standard_normal((1, 13)).astype(np.float32)
    got = session(linear_relu_onnx).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, np.maximum(x @ w.T + b, 0), atol=1e-6)


def test_sklearn_iris_keeps_onnx_ml_zipmap(sklearn_onnx):
    from sklearn.datasets import load_iris

    m = onnx.load(str(sklearn_onnx))
    onnx.checker.check_model(m)
    assert [n.op_type for n in m.graph.node if n.domain == "ai.onnx.ml"] == [
        "LinearClassifier", "Normalizer", "ZipMap"]
    assert [o.name for o in m.graph.output] == ["output_label", "output_probability"]
    X, y = load_iris(return_X_y=True)
    labels, probs = session(sklearn_onnx).run(None, {"input": X.astype(np.float32)})
    assert (labels == y).mean() > 0.95
    assert isinstance(probs, list) and set(probs[0]) == {0, 1, 2}
    assert abs(sum(probs[0].values()) - 1) < 1e-5


def test_two_transpose_needs_shape_inference(two_transpose_onnx):
    m = onnx.load(str(two_transpose_onnx))
    (y,) = m.graph.output
    assert y.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not y.type.tensor_type.HasField("shape")
    assert [n.op_type for n in m.graph.node] == ["Transpose", "Transpose"]
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    assert dims(inferred.graph.output[0]) == [1, 5, 4, 3]
    onnx.checker.check_model(inferred)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)
    got = session(two_transpose_onnx).run(None, {"X": x})[0]
    np.testing.assert_array_equal(got, x.transpose(0, 3, 2, 1))


def test_srcnn_takes_factor_as_input(srcnn_onnx):
    m = onnx.load(str(srcnn_onnx))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version == 11
    assert [i.name for i in m.graph.input] == ["input", "factor"]
    assert dims(m.graph.input[0]) == [1, 3, "height", "width"] and dims(m.graph.input[1]) == [4]
    resize = next(n for n in m.graph.node if n.op_type == "Resize")
    assert resize.input[2] == "factor"  # the scales come from the graph input, not a constant
    assert {a.name: a for a in resize.attribute}["mode"].s == b"cubic"
    assert [n.op_type for n in m.graph.node if n.op_type != "Constant"] == [
        "Resize", "Conv", "Relu", "Conv", "Relu", "Conv"]
    sess = session(srcnn_onnx)
    x = np.random.default_rng(0).random((1, 3, 16, 20), dtype=np.float32)
    for scale in (2, 3):
        out = sess.run(None, {"input": x, "factor": np.array([1, 1, scale, scale], np.float32)})[0]
        assert out.shape == (1, 3, 16 * scale, 20 * scale)


# --- cache behaviour and command line -----------------------------------------------------------


def test_cache_is_idempotent_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE", str(tmp_path))
    path = models.two_transpose()
    assert path.parent == tmp_path / "models"
    stamp = path.stat().st_mtime_ns
    assert models.two_transpose() == path and path.stat().st_mtime_ns == stamp

    def broken(tmp):
        tmp.write_bytes(b"half a model")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        models._cached("broken.onnx", broken)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [path.name]


def test_command_line(tmp_path):
    env = {**os.environ, "EDGESDK_CACHE": str(tmp_path)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tools.models", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    listed = run("--list")
    assert listed.returncode == 0 and "two_transpose" in listed.stdout and "cached" not in listed.stdout
    built = run("--path", "two_transpose")
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == str(tmp_path / "models" / models._FILES["two_transpose"])
    assert "two_transpose\t" in run("--list").stdout and "\tcached" in run("--list").stdout
    bad = run("--path", "nonsense")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
