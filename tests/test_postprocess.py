"""Post-processing: real models through onnxruntime on real images, and hand-built YOLO heads."""
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from edgesdk.device import ocr, postprocess
from edgesdk.backends.onnxruntime.session import reference_session
from edgesdk.errors import EdgeSDKError
from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference, read_image
from tools import models

needs_opencv_doc = pytest.mark.skipif(not models.OPENCV_DOC_EXAMPLES.is_dir(),
                                      reason="Debian's opencv-doc is not installed")


@pytest.fixture(scope="module")
def det_session(ppocr_det_onnx):
    return reference_session(ppocr_det_onnx)


@pytest.fixture(scope="module")
def rec_session(ppocr_rec_onnx):
    return reference_session(ppocr_rec_onnx)


@pytest.fixture(scope="module")
def page():
    return read_image(models.text_image())


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text))


# --- registry and strict params ---------------------------------------------------------------


def test_kinds_are_the_profile_kinds():
    from edgesdk.build.targets import POSTPROCESS

    assert tuple(postprocess.KINDS) == POSTPROCESS


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(EdgeSDKError, match="'ssd'.*none, topk, yolo, ppocr-det, ppocr-rec"):
        postprocess.get("ssd", {})


@pytest.mark.parametrize("kind,params,match", [
    ("topk", {"kk": 3}, "unknown param 'kk'; known: k, output, softmax"),
    ("yolo", {"conf": 0.3, "nms": 0.5}, "unknown param 'nms'"),
    ("ppocr-det", {"thresh": 0.3}, "unknown param 'thresh'"),
    ("none", {"k": 1}, "unknown param 'k'; known: none"),
    ("topk", {"k": 0}, "param 'k': expected \\[1, inf\\], got 0"),
    ("topk", {"k": 2.5}, "param 'k': expected an integer"),
    ("topk", {"softmax": 1}, "param 'softmax': expected one of 'auto', True, False, got 1"),
    ("yolo", {"conf": 1.5}, "param 'conf'"),
    ("yolo", {"iou": 0}, "param 'iou'"),
    ("yolo", {"format": "v7"}, "param 'format': expected one of 'v8', 'v5', got 'v7'"),
    ("yolo", {"classes": [0, -1]}, "param 'classes'"),
    ("yolo", {"max_det": True}, "param 'max_det'"),
    ("ppocr-det", {"unclip_ratio": -1}, "param 'unclip_ratio'"),
    ("topk", {"kind": "yolo"}, "params say kind 'yolo'"),
])
def test_bad_params_are_named(kind, params, match):
    with pytest.raises(EdgeSDKError, match=match):
        postprocess.get(kind, params, labels=["a"] if kind == "ppocr-rec" else None)


def test_params_get_defaults_and_make_the_manifest_table():
    p = postprocess.get("yolo", {"kind": "yolo", "conf": 0.5, "classes": [2, 0, 2]})
    assert p.params == {"conf": 0.5, "iou": 0.45, "max_det": 300, "format": "v8", "classes": [0, 2],
                        "output": None}
    assert p.table() == {"kind": "yolo", **p.params}
    assert postprocess.get("ppocr-det").params == {
        "threshold": 0.3, "box_thresh": 0.6, "unclip_ratio": 1.5, "max_candidates": 1000, "min_size": 3.0,
        "output": None}
    assert postprocess.get("topk", None).params == {"k": 5, "softmax": "auto", "output": None}


def test_rec_needs_labels():
    with pytest.raises(EdgeSDKError, match="ppocr-rec: needs labels"):
        postprocess.get("ppocr-rec", {})


def test_device_side_imports_numpy_only():
    code = ("import sys, edgesdk.device.postprocess; "
            "print(sorted({'cv2', 'onnx', 'onnxruntime', 'torch', 'openvino', 'ncnn', 'scipy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_none_returns_lists():
    out = postprocess.get("none")({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(4)})
    assert out == {"a": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "b": 4}


# --- topk -------------------------------------------------------------------------------------


def test_topk_calls_coffee_espresso(effnet_onnx, real_images, imagenet_labels):
    spec = PreprocessSpec(**models.EFFICIENTNET_PREPROCESS)
    frame = read_image(real_images["skimage_coffee"])
    outputs = reference_session(effnet_onnx).run({"images": preprocess_reference(frame, spec)})
    result = postprocess.get("topk", {}, imagenet_labels)(outputs, frame.shape[:2], spec)
    top = result["topk"]
    assert len(top) == 5
    assert top[0]["label"] == "espresso" and top[0]["index"] == 967 and top[0]["score"] > 0.8
    scores = [t["score"] for t in top]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-9
    # auto softmax on logits equals an explicit one; on probabilities it changes nothing
    logits = outputs["logits"][0].astype(np.float64)
    probs = postprocess.softmax(logits)
    assert scores == pytest.approx(list(np.sort(probs)[::-1][:5]), abs=1e-9)
    again = postprocess.get("topk", {"k": 3}, imagenet_labels)({"p": probs[None]})["topk"]
    assert [t["score"] for t in again] == pytest.approx(scores[:3], abs=1e-9)
    raw = postprocess.get("topk", {"k": 1, "softmax": False})(outputs)["topk"][0]
    assert raw == {"index": 967, "label": None, "score": pytest.approx(float(logits.max()), abs=1e-6)}


def test_topk_errors_name_the_output():
    top = postprocess.get("topk", {"output": "prob"}, ["a", "b", "c"])
    with pytest.raises(EdgeSDKError, match="no output 'prob'; outputs are \\['logits'\\]"):
        top({"logits": np.zeros((1, 3))})
    with pytest.raises(EdgeSDKError, match="'prob'.*shape \\[2, 3\\]"):
        top({"prob": np.zeros((2, 3))})
    with pytest.raises(EdgeSDKError, match="'prob' of shape \\[1, 4\\] has 4 classes, but 3 labels"):
        top({"prob": np.zeros((1, 4))})
    assert [t["label"] for t in top({"prob": np.array([[0.2, 0.5, 0.3]])})["topk"]] == ["b", "c", "a"]


# --- yolo -------------------------------------------------------------------------------------

# A 1280x720 frame letterboxed into 640x640: scale 0.5, 140 rows of padding above and below.
FRAME_HW = (720, 1280)
LETTERBOX = PreprocessSpec(size=(640, 640), resize="letterbox")


def to_input_xyxy(box):
    x1, y1, x2, y2 = box
    return [x1 * 0.5, y1 * 0.5 + 140, x2 * 0.5, y2 * 0.5 + 140]


def yolo_head(rows, nc, fmt, n_total=50):
    """rows: (frame box x1,y1,x2,y2, class, score[, objectness]) -> a YOLO output tensor with
    background rows of low scores added."""
    rng = np.random.default_rng(0)
    width = 4 + nc + (fmt == "v5")
    table = np.zeros((n_total, width), np.float32)
    table[:, :4] = rng.uniform(50, 600, (n_total, 4))
    table[:, 4:] = rng.uniform(0, 0.05, (n_total, width - 4))  # no score above conf
    for i, (box, cls, score, *obj) in enumerate(rows):
        x1, y1, x2, y2 = to_input_xyxy(box)
        table[i, :4] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        first_class = 4 if fmt == "v8" else 5
        table[i, first_class:] = 0.01
        table[i, first_class + cls] = score
        if fmt == "v5":
            table[i, 4] = obj[0] if obj else 1.0
    return table.T[None] if fmt == "v8" else table[None]


BOX_A = [100.0, 200.0, 300.0, 400.0]
BOX_A_DUP = [110.0, 205.0, 305.0, 410.0]  # IoU with A ~0.83
BOX_B = [700.0, 100.0, 900.0, 300.0]
BOX_OUT = [1200.0, 650.0, 1400.0, 800.0]  # runs off the frame's right and bottom edges
ROWS = [(BOX_A, 0, 0.9), (BOX_A_DUP, 0, 0.8), (BOX_A, 1, 0.7), (BOX_B, 2, 0.6), (BOX_OUT, 1, 0.5),
        (BOX_B, 2, 0.2)]
LABELS = ["person", "bicycle", "car"]


def check_detections(dets, expected):
    assert len(dets) == len(expected), dets
    for det, (box, cls, score) in zip(dets, expected):
        assert det["class"] == cls and det["label"] == LABELS[cls]
        assert det["score"] == pytest.approx(score, abs=1e-6)
        assert det["box"] == pytest.approx(box, abs=1e-3)


@pytest.mark.parametrize("fmt", ["v8", "v5"])
def test_yolo_decode_nms_and_letterbox(fmt):
    head = yolo_head(ROWS, 3, fmt)
    yolo = postprocess.get("yolo", {"format": fmt, "conf": 0.25}, LABELS)
    dets = yolo({"output0": head}, FRAME_HW, LETTERBOX)["detections"]
    # the duplicate of A is suppressed; the same box as another class survives (class-wise NMS);
    # 0.2 is below conf; the box off the frame is clipped to it
    check_detections(dets, [(BOX_A, 0, 0.9), (BOX_A, 1, 0.7), (BOX_B, 2, 0.6), ([1200, 650, 1280, 720], 1, 0.5)])
    assert all(isinstance(v, float) for d in dets for v in d["box"])


def test_yolo_v5_multiplies_objectness():
    rows = [(BOX_A, 0, 0.9, 0.5), (BOX_B, 2, 0.9, 0.2)]  # scores 0.45 and 0.18
    dets = postprocess.get("yolo", {"format": "v5"}, LABELS)({"o": yolo_head(rows, 3, "v5")}, FRAME_HW, LETTERBOX)
    check_detections(dets["detections"], [(BOX_A, 0, 0.45)])


def test_yolo_filters_and_limits():
    head = {"output0": yolo_head(ROWS, 3, "v8")}
    only_1 = postprocess.get("yolo", {"classes": [1]}, LABELS)(head, FRAME_HW, LETTERBOX)["detections"]
    check_detections(only_1, [(BOX_A, 1, 0.7), ([1200, 650, 1280, 720], 1, 0.5)])
    top2 = postprocess.get("yolo", {"max_det": 2}, LABELS)(head, FRAME_HW, LETTERBOX)["detections"]
    check_detections(top2, [(BOX_A, 0, 0.9), (BOX_A, 1, 0.7)])
    # a looser IoU threshold keeps the duplicate of A
    loose = postprocess.get("yolo", {"iou": 0.9}, LABELS)(head, FRAME_HW, LETTERBOX)["detections"]
    assert [d["score"] for d in loose] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    none = postprocess.get("yolo", {"conf": 0.95})(head, FRAME_HW, LETTERBOX)
    assert none == {"detections": []}


def test_yolo_stretch_mapping():
    spec = PreprocessSpec(size=(640, 480), resize="stretch")
    head = np.zeros((1, 5, 1), np.float32)
    head[0, :, 0] = [320, 240, 64, 48, 0.9]  # the input's centre, a tenth of each side
    (det,) = postprocess.get("yolo")({"o": head}, (300, 1000), spec)["detections"]
    assert det["box"] == pytest.approx([450, 135, 550, 165], abs=1e-4)
    assert det["label"] is None and det["class"] == 0


def test_yolo_errors():
    yolo = postprocess.get("yolo", {}, LABELS)
    with pytest.raises(EdgeSDKError, match="format v8 expects \\[1, 4 \\+ classes, boxes\\], got \\[1, 4, 10\\]"):
        yolo({"o": np.zeros((1, 4, 10))}, FRAME_HW, LETTERBOX)
    with pytest.raises(EdgeSDKError, match="has 80 classes, but 3 labels"):
        yolo({"o": np.zeros((1, 84, 100))}, FRAME_HW, LETTERBOX)
    with pytest.raises(EdgeSDKError, match="needs the PreprocessSpec"):
        yolo({"o": np.zeros((1, 7, 100))}, FRAME_HW, None)
    with pytest.raises(EdgeSDKError, match="frame_shape must be \\(height, width\\)"):
        yolo({"o": np.zeros((1, 7, 100))}, None, LETTERBOX)


def test_nms_matches_brute_force():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], axis=1)
    scores = rng.uniform(0, 1, 200)

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    kept = []
    for i in np.argsort(-scores):
        if all(iou(boxes[i], boxes[j]) <= 0.5 for j in kept):
            kept.append(i)
    assert postprocess.nms(boxes, scores, 0.5).tolist() == kept
    assert postprocess.nms(boxes, scores, 0.5, max_det=7).tolist() == kept[:7]


# --- DB text detection building blocks --------------------------------------------------------


@pytest.mark.parametrize("seed,density", [(0, 0.3), (1, 0.5), (2, 0.62), (3, 0.05)])
def test_label_components_matches_opencv(seed, density):
    cv2 = pytest.importorskip("cv2")
    bitmap = np.random.default_rng(seed).random((61, 87)) < density
    rows, starts, ends, labels = postprocess.label_components(bitmap)
    ours = np.full(bitmap.shape, -1)
    for r, s, e, lab in zip(rows, starts, ends, labels):
        ours[r, s:e] = lab
    assert np.array_equal(ours >= 0, bitmap)
    n, theirs = cv2.connectedComponents(bitmap.astype(np.uint8), connectivity=8)
    assert labels.max() + 1 == n - 1
    # the same partition: a one-to-one map between our labels and OpenCV's
    pairs = set(zip(ours[bitmap].tolist(), theirs[bitmap].tolist()))
    assert len(pairs) == n - 1


def test_label_components_snake_and_empty():
    snake = np.zeros((40, 40), bool)
    snake[::4, 1:-1] = True  # horizontal bars joined alternately at the right and the left end
    for r in range(0, 36, 4):
        snake[r:r + 5, -2 if r % 8 == 0 else 1] = True
    snake[39, 5] = True  # an isolated pixel below
    _, _, _, labels = postprocess.label_components(snake)
    assert labels.max() + 1 == 2
    assert postprocess.label_components(np.zeros((5, 5), bool))[3].size == 0


def test_min_area_rect_of_a_rotated_rectangle():
    cv2 = pytest.importorskip("cv2")
    angle = math.radians(17)
    u, v = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    rng = np.random.default_rng(4)
    inside = rng.uniform([0, 0], [120, 30], (400, 2))
    corners = np.array([[0, 0], [120, 0], [120, 30], [0, 30]])
    points = np.vstack([inside, corners]) @ np.stack([u, v])
    hull = cv2.convexHull(points.astype(np.float32))[:, 0].astype(np.float64)
    ru, rv, (u0, u1), (v0, v1) = postprocess.min_area_rect(hull)
    assert sorted([u1 - u0, v1 - v0]) == pytest.approx([30, 120], abs=1e-4)
    assert abs(abs(ru @ u) - 1) < 1e-9 or abs(abs(rv @ u) - 1) < 1e-9
    (_, _), (w, h), _ = cv2.minAreaRect(points.astype(np.float32))
    assert (u1 - u0) * (v1 - v0) == pytest.approx(w * h, rel=1e-4)
    assert postprocess.min_area_rect(np.array([[0.0, 0.0], [5.0, 0.0]])) is None


# --- PP-OCR det on real images ------------------------------------------------------------------


def detect(det_session, frame, spec=None, params=None):
    h, w = frame.shape[:2]
    spec = spec or ocr.ppocr_det_spec(w, h)
    outputs = det_session.run({"x": preprocess_reference(frame, spec)})
    return postprocess.get("ppocr-det", params)(outputs, (h, w), spec)["boxes"]


def test_det_finds_the_lines_of_page(det_session, page):
    h, w = page.shape[:2]
    boxes = detect(det_session, page)
    assert 6 <= len(boxes) <= 9, len(boxes)  # a title, 5 lines of text, a line of code
    centres = []
    for b in boxes:
        pts = np.array(b["box"])
        assert pts.shape == (4, 2) and b["score"] >= 0.6
        assert (pts >= 0).all() and (pts[:, 0] <= w).all() and (pts[:, 1] <= h).all()
        (tl, tr, br, bl) = pts
        width, height = np.hypot(*(tr - tl)), np.hypot(*(bl - tl))
        assert width > 4 * height and 8 < height < 35, b
        assert abs(math.degrees(math.atan2(tr[1] - tl[1], tr[0] - tl[0]))) < 5  # horizontal
        centres.append(pts[:, 1].mean())
    assert centres == sorted(centres)  # one box per line here, so reading order is top to bottom
    covered = sum(np.hypot(*(np.array(b["box"][1]) - b["box"][0])) * np.hypot(*(np.array(b["box"][3]) - b["box"][0]))
                  for b in boxes)
    assert covered > 0.3 * h * w


def test_det_on_a_cat_finds_little(det_session, real_images):
    cat = read_image(real_images["skimage_chelsea"])
    boxes = detect(det_session, cat)
    assert len(boxes) <= 3  # at most the eyes, read as letters by a text detector
    assert detect(det_session, read_image(real_images["sklearn_china"])) == []


def test_det_letterbox_maps_back_like_stretch(det_session, page):
    """The page letterboxed into 960x960 (scale 2.5, 241 rows of padding above) lands on the same
    frame boxes as the 960x480 stretch (scale 2.5 x 2.51), within the pixel the two
    resamplings and the model's response differ by."""
    stretch = detect(det_session, page)
    letterbox = detect(det_session, page, PreprocessSpec(size=(960, 960), resize="letterbox", pad=114, color="bgr",
                                                         mean=postprocess.PPOCR_MEAN, std=postprocess.PPOCR_STD))
    assert len(letterbox) == len(stretch)
    for a, b in zip(stretch, letterbox):
        assert np.abs(np.array(a["box"]) - np.array(b["box"])).max() < 1.5, (a, b)


def test_det_params_change_the_result(det_session, page):
    default = detect(det_session, page)
    wider = detect(det_session, page, params={"unclip_ratio": 2.5})
    assert len(wider) == len(default)
    height = lambda b: np.hypot(*(np.array(b["box"][3]) - b["box"][0]))  # noqa: E731
    assert all(height(w) > height(d) + 2 for w, d in zip(wider, default))
    assert detect(det_session, page, params={"box_thresh": 1.0}) == []
    assert len(detect(det_session, page, params={"max_candidates": 2})) == 2


def test_det_rejects_a_wrong_map():
    det = postprocess.get("ppocr-det")
    with pytest.raises(EdgeSDKError, match="'prob'.*\\[1, 1, H, W\\], got \\[1, 2, 8, 8\\]"):
        det({"prob": np.zeros((1, 2, 8, 8))}, (8, 8), PreprocessSpec(size=(8, 8)))
    assert det({"prob": np.zeros((1, 1, 8, 8))}, (8, 8), PreprocessSpec(size=(8, 8))) == {"boxes": []}


# --- PP-OCR rec ---------------------------------------------------------------------------------


def test_ctc_greedy_rules():
    keys = ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0, 0, 2]  # a a _ a b b ' ' _ _ b -> "aab b"
    probs = np.full((2, len(steps), 4), 0.05, np.float32)
    probs[0, np.arange(len(steps)), steps] = np.linspace(0.5, 0.95, len(steps))
    probs[1, :, 0] = 0.9  # all blank
    out = postprocess.get("ppocr-rec", {}, keys)({"softmax": probs})
    assert out["text"] == ["aab b", ""]
    kept = [0, 3, 4, 6, 9]
    assert out["score"][0] == pytest.approx(float(np.linspace(0.5, 0.95, len(steps))[kept].mean()), abs=1e-6)
    assert out["score"][1] == 0.0
    with pytest.raises(EdgeSDKError, match="has 4 classes, but 3 labels"):
        postprocess.get("ppocr-rec", {}, keys[:3])({"softmax": probs})
    with pytest.raises(EdgeSDKError, match="expected \\[N, T, classes\\], got \\[10, 4\\]"):
        postprocess.get("ppocr-rec", {}, keys)({"softmax": probs[0]})


@needs_opencv_doc
def test_rec_reads_real_word_crops(rec_session, ppocr_keys, real_images):
    rec = postprocess.get("ppocr-rec", {}, ppocr_keys)
    words_by_image = {"opencv_text_scenetext_word02": "HERE", "opencv_text_scenetext_word03": "riser",
                      "opencv_text_scenetext_word04": "Produkt"}
    crops = []
    for name in words_by_image:
        img = read_image(real_images[name])
        h, w = img.shape[:2]
        crops.append(ocr.crop_text(img, [[0, 0], [w, 0], [w, h], [0, h]]))
    batch = ocr.rec_batch(crops)
    assert batch.shape[:3] == (3, 3, 48) and batch.shape[3] % 8 == 0 and batch.shape[3] >= 320
    out = rec(rec_session.run({"x": batch}))
    assert out["text"] == list(words_by_image.values())
    assert min(out["score"]) > 0.9


def test_crop_text_turns_vertical_boxes():
    frame = np.zeros((100, 60, 3), np.uint8)
    frame[10:90, 20:30] = 255  # a tall white bar
    frame[10:20, 20:30, 2] = 0  # its top end is cyan (BGR: no red)
    crop = ocr.crop_text(frame, [[20, 10], [30, 10], [30, 90], [20, 90]], height=10)
    assert crop.shape == (10, 80, 3)  # turned a quarter: the bar now runs left to right
    assert crop[:, :8, 2].max() < 1 and crop[:, 12:, 2].min() > 254  # top end -> left end


# --- end to end ---------------------------------------------------------------------------------


def test_ocr_page_reads_skimage_page(det_session, rec_session, ppocr_keys, page):
    result = ocr.ocr_page(det_session.run, rec_session.run, page, keys=ppocr_keys)
    lines = result["lines"]
    assert len(lines) >= 6 and sum(bool(line["text"].strip()) for line in lines) >= len(lines) - 1
    found = words(result["text"])
    expected = {"Region", "segmentation", "first", "determine", "markers", "coins", "background",
                "pixels", "unambiguously", "either", "object", "found", "histogram"}
    assert len(expected & found) >= 11, sorted(expected - found)
    # reading order: the heading first, the paragraph's lines in turn
    order = [next(i for i, line in enumerate(lines) if w in line["text"])
             for w in ("Region", "determine", "pixels", "unambiguously", "found", "histogram")]
    assert order == sorted(order)
    assert lines[0]["text"].replace(" ", "") == "Region-basedsegmentation"
    assert all(line["score"] > 0.8 for line in lines)


def test_ocr_page_scales_small_text_up(det_session, rec_session, ppocr_keys, page):
    """page() at half size (5-pixel letters) still reads: the det input is scaled up to 960."""
    cv2 = pytest.importorskip("cv2")
    small = cv2.resize(page, (192, 96), interpolation=cv2.INTER_AREA)
    result = ocr.ocr_page(det_session.run, rec_session.run, small, keys=ppocr_keys)
    expected = {"Region", "segmentation", "first", "determine", "markers", "coins", "pixels", "object",
                "found", "extreme"}
    assert len(expected & words(result["text"])) >= 8, result["text"]


@needs_opencv_doc
def test_ocr_page_reads_a_street_sign(det_session, rec_session, ppocr_keys, real_images):
    photo = read_image(real_images["opencv_text_scenetext01"])
    result = ocr.ocr_page(det_session.run, rec_session.run, photo, keys=ppocr_keys)
    assert result["text"].split("\n")[:4] == ["NOTICE", "DOUBLE", "PARKING", "PROHIBITED"]


def test_ocr_page_rejects_bad_frames_and_outputs(det_session, rec_session, ppocr_keys, page):
    with pytest.raises(EdgeSDKError, match="frame: expected dtype uint8"):
        ocr.ocr_page(det_session.run, rec_session.run, page.astype(np.float32), keys=ppocr_keys)
    with pytest.raises(EdgeSDKError, match="det_run must return a dict"):
        ocr.ocr_page(lambda feeds: None, rec_session.run, page, keys=ppocr_keys)


def test_ocr_page_fits_a_fixed_rec_shape(det_session, rec_session, ppocr_keys, page):
    """A rec model built for [2, 3, 48, 960] gets batches of exactly that shape and still reads."""
    shapes = []

    def rec_run(feeds):
        shapes.append(feeds["x"].shape)
        return rec_session.run(feeds)

    result = ocr.ocr_page(det_session.run, rec_run, page, keys=ppocr_keys, rec_shape=[2, 3, 48, 960])
    assert shapes and set(shapes) == {(2, 3, 48, 960)}
    assert len(shapes) == math.ceil(len(result["lines"]) / 2)
    assert len({"Region", "determine", "markers", "coins", "pixels", "unambiguously", "object"}
               & words(result["text"])) >= 6


@pytest.mark.slow
def test_ocr_bundles_reads_page_through_packaged_models(tmp_path, ppocr_det_onnx, ppocr_rec_onnx, ppocr_keys, page):
    """Real bundles as `edgesdk run DET --rec REC` loads them: a fixed 960x480 letterboxed det with
    PP-OCR's normalisation, a rec fixed at [1, 3, 48, 960] carrying the character list."""
    from edgesdk.build.package import package
    from edgesdk.device.runtime import load

    spec = PreprocessSpec(size=(960, 480), resize="letterbox", color=postprocess.PPOCR_COLOR,
                          mean=postprocess.PPOCR_MEAN, std=postprocess.PPOCR_STD)
    package(ppocr_det_onnx, "x86-onnxruntime", tmp_path / "det", shapes={"x": (1, 3, 480, 960)}, spec=spec)
    package(ppocr_rec_onnx, "x86-onnxruntime", tmp_path / "rec", shapes={"x": (1, 3, 48, 960)}, labels=ppocr_keys)
    with load(tmp_path / "det") as det, load(tmp_path / "rec") as rec:
        result = ocr.ocr_bundles(det, rec, page)
    found = words(result["text"])
    assert len({"Region", "segmentation", "first", "determine", "markers", "coins", "background", "pixels",
                "unambiguously", "object", "histogram"} & found) >= 9, result["text"]
    assert result["text"].split("\n")[0].replace(" ", "") == "Region-basedsegmentation"
