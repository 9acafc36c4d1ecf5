"""Post-processing named by a target profile's ``[postprocess]`` table (stored in the manifest).

Device side: numpy only. ``get(kind, params, labels)`` returns a Postprocessor, a callable
``(outputs, frame_shape, spec) -> dict`` of JSON-friendly results:

- ``none``       the outputs as nested lists
- ``topk``       classifier scores -> {"topk": [{"index", "label", "score"}]}
- ``yolo``       YOLOv5/v8 decode + class-wise NMS -> {"detections": [{"box", "score", "class", "label"}]}
- ``ppocr-det``  DB text detection -> {"boxes": [{"box": 4 corner points, "score"}]} in reading order
- ``ppocr-rec``  CTC greedy decode -> {"text": [...], "score": [...]}

Boxes come back in frame pixels: model-input coordinates are mapped through
``PreprocessSpec.geometry`` (letterbox or stretch) and clipped to the frame. The whole-page OCR
application (detection, crops, recognition) is edgesdk.device.ocr; the text-region geometry the DB
decoder uses is edgesdk.device.textgeom.
"""
from __future__ import annotations

import numpy as np

from edgesdk.errors import EdgeSDKError
from edgesdk.device.preprocess import PreprocessSpec
from edgesdk.device.textgeom import (_convex_hull, _row_extremes, label_components, min_area_rect,  # noqa: F401
                                     order_corners, reading_lines)

# PP-OCR's own preprocessing (PaddleOCR / RapidOCR): frames as OpenCV reads them (BGR, no channel
# swap: the models were trained on cv2-decoded images) and (x / 255 - 0.5) / 0.5.
PPOCR_COLOR = "bgr"
PPOCR_MEAN = (127.5, 127.5, 127.5)
PPOCR_STD = (127.5, 127.5, 127.5)
PPOCR_DET_MULTIPLE = 32  # DBNet downsamples 32x: both input sides must divide by it
PPOCR_DET_LIMIT_SIDE = 960  # frames are scaled, up or down, so the det input's longer side is this
PPOCR_REC_HEIGHT = 48  # PP-OCRv4 rec is trained on 48-pixel lines
PPOCR_REC_MIN_WIDTH = 320  # crops are padded to at least this width, as PaddleOCR batches them
PPOCR_REC_MULTIPLE = 8  # rec emits one time step per 8 input columns
PPOCR_REC_BATCH = 6
PPOCR_VERTICAL_RATIO = 1.5  # a crop this much taller than wide is vertical text: turn it


class Postprocessor:
    """Base of the post-processors: ``kind``, ``params`` (defaults filled in, for the manifest),
    ``labels`` (class names or the CTC character list) and ``__call__``."""

    kind = ""

    def __init__(self, params: dict, labels: list[str] | None):
        self.params = params
        self.labels = labels

    def table(self) -> dict:
        """The ``[postprocess]`` table as the manifest stores it."""
        return {"kind": self.kind, **self.params}

    def __call__(self, outputs: dict, frame_shape=None, spec: PreprocessSpec | None = None) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    def _output(self, outputs) -> tuple[str, np.ndarray]:
        """The output this post-processor reads: params["output"] or the first one."""
        if not isinstance(outputs, dict) or not outputs:
            raise EdgeSDKError(f"postprocess {self.kind}: expected a non-empty dict of output name -> array, "
                               f"got {type(outputs).__name__}")
        name = self.params.get("output") or next(iter(outputs))
        if name not in outputs:
            raise EdgeSDKError(f"postprocess {self.kind}: no output {name!r}; outputs are {list(outputs)}")
        return name, np.asarray(outputs[name])

    def _label(self, index: int) -> str | None:
        return self.labels[index] if self.labels is not None else None

    def _check_classes(self, name: str, shape, n: int) -> None:
        if self.labels is not None and len(self.labels) != n:
            raise EdgeSDKError(f"postprocess {self.kind}: output {name!r} of shape {list(shape)} has {n} classes, "
                               f"but {len(self.labels)} labels were given")


# --- parameters -------------------------------------------------------------------------------


def _number(lo=None, hi=None, integer=False, lo_open=False):
    """A checker for a number in [lo, hi] (or (lo, hi] with lo_open)."""
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float) if not integer else int):
            raise ValueError("an integer" if integer else "a number")
        if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and v > hi:
            raise ValueError(f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, "
                             f"{hi if hi is not None else 'inf'}]")
        return int(v) if integer else float(v)
    return check


def _choice(*allowed):
    def check(v):
        if not any(type(v) is type(a) and v == a for a in allowed):  # 1 is not True here
            raise ValueError(f"one of {', '.join(repr(a) for a in allowed)}")
        return v
    return check


def _output_name(v):
    if v is not None and not (isinstance(v, str) and v):
        raise ValueError("an output name")
    return v


def _class_list(v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                   for c in v):
        raise ValueError("a list of class indices >= 0")
    return sorted(set(v))


def _checked(kind: str, params, schema: dict) -> dict:
    """params with defaults filled in; EdgeSDKError naming an unknown key or a bad value."""
    params = dict(params or {})
    if params.get("kind", kind) != kind:
        raise EdgeSDKError(f"postprocess {kind}: params say kind {params['kind']!r}")
    params.pop("kind", None)
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise EdgeSDKError(f"postprocess {kind}: unknown param {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(sorted(schema)) or 'none'}")
    out = {}
    for key, (default, check) in schema.items():
        value = params.get(key, default)
        try:
            out[key] = check(value)
        except ValueError as e:
            raise EdgeSDKError(f"postprocess {kind}: param {key!r}: expected {e}, got {value!r}") from None
    return out


def _frame_hw(kind: str, frame_shape, spec) -> tuple[int, int]:
    if not isinstance(spec, PreprocessSpec):
        raise EdgeSDKError(f"postprocess {kind}: needs the PreprocessSpec the input was made with, "
                           f"got {type(spec).__name__}")
    try:
        h, w = (int(v) for v in tuple(frame_shape)[:2])
    except (TypeError, ValueError):
        raise EdgeSDKError(f"postprocess {kind}: frame_shape must be (height, width), got {frame_shape!r}") from None
    if h <= 0 or w <= 0:
        raise EdgeSDKError(f"postprocess {kind}: frame_shape must be positive, got {frame_shape!r}")
    return h, w


def _to_frame(xy: np.ndarray, spec: PreprocessSpec, frame_h: int, frame_w: int) -> np.ndarray:
    """Model-input pixel coordinates (..., 2) -> frame pixels, undoing letterbox/stretch; clipped."""
    left, top, nw, nh = spec.geometry(frame_w, frame_h)
    x = (xy[..., 0] - left) * (frame_w / nw)
    y = (xy[..., 1] - top) * (frame_h / nh)
    return np.stack([np.clip(x, 0, frame_w), np.clip(y, 0, frame_h)], axis=-1)


# --- none, topk -------------------------------------------------------------------------------


class Passthrough(Postprocessor):
    kind = "none"
    schema: dict = {}

    def __call__(self, outputs, frame_shape=None, spec=None) -> dict:
        if not isinstance(outputs, dict):
            raise EdgeSDKError(f"postprocess none: expected a dict of output name -> array, "
                               f"got {type(outputs).__name__}")
        return {name: np.asarray(v).tolist() for name, v in outputs.items()}


def _is_probability(v: np.ndarray) -> bool:
    return bool(v.min() >= 0 and v.max() <= 1 and abs(float(v.sum(dtype=np.float64)) - 1) < 1e-3)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class TopK(Postprocessor):
    kind = "topk"
    schema = {"k": (5, _number(1, integer=True)),
              "softmax": ("auto", _choice("auto", True, False)),
              "output": (None, _output_name)}

    def __call__(self, outputs, frame_shape=None, spec=None) -> dict:
        name, raw = self._output(outputs)
        # One score vector: [C], [1, C] or [1, C, 1, 1] all carry C scores.
        scores = raw.reshape(-1) if raw.size and raw.size == max(raw.shape, default=0) else None
        if scores is None or raw.ndim == 0:
            raise EdgeSDKError(f"postprocess topk: output {name!r}: expected one score vector like [1, C], "
                               f"got shape {list(raw.shape)}")
        self._check_classes(name, raw.shape, scores.size)
        scores = scores.astype(np.float64)
        use_softmax = self.params["softmax"]
        if use_softmax is True or use_softmax == "auto" and not _is_probability(scores):
            scores = softmax(scores)
        k = min(self.params["k"], scores.size)
        top = np.argsort(-scores, kind="stable")[:k]
        return {"topk": [{"index": int(i), "label": self._label(int(i)), "score": float(scores[i])}
                         for i in top]}


# --- YOLO -------------------------------------------------------------------------------------


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_det: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; boxes [N, 4] x1,y1,x2,y2. Indices kept, best first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds ``iou``.
    """
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and (max_det is None or len(keep) < max_det):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


class Yolo(Postprocessor):
    """YOLO heads with boxes as cx, cy, w, h in model-input pixels (as ultralytics exports them).

    v8: [1, 4 + nc, N] of box + class scores; v5: [1, N, 5 + nc] of box + objectness + class
    scores (score = objectness x class score). NMS is per class, by shifting each class's boxes
    by class x (largest coordinate + 1) so boxes of different classes never overlap.
    """

    kind = "yolo"
    schema = {"conf": (0.25, _number(0, 1)),
              "iou": (0.45, _number(0, 1, lo_open=True)),
              "max_det": (300, _number(1, integer=True)),
              "format": ("v8", _choice("v8", "v5")),
              "classes": (None, _class_list),
              "output": (None, _output_name)}

    def _decode(self, name: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fmt = self.params["format"]
        extra = 4 if fmt == "v8" else 5
        axis = 1 if fmt == "v8" else 2
        if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[axis] <= extra:
            layout = "[1, 4 + classes, boxes]" if fmt == "v8" else "[1, boxes, 5 + classes]"
            raise EdgeSDKError(f"postprocess yolo: output {name!r}: format {fmt} expects {layout}, "
                               f"got {list(raw.shape)}")
        self._check_classes(name, raw.shape, raw.shape[axis] - extra)
        rows = (raw[0].T if fmt == "v8" else raw[0]).astype(np.float32)
        cls_scores = rows[:, extra:] * rows[:, 4:5] if fmt == "v5" else rows[:, extra:]
        if self.params["classes"] is not None:
            wanted = np.zeros(cls_scores.shape[1], bool)
            wanted[[c for c in self.params["classes"] if c < wanted.size]] = True
            cls_scores = np.where(wanted, cls_scores, -np.inf)
        cls = cls_scores.argmax(axis=1)
        score = cls_scores[np.arange(len(cls)), cls]
        return rows[:, :4], score, cls

    def __call__(self, outputs, frame_shape=None, spec=None) -> dict:
        frame_h, frame_w = _frame_hw(self.kind, frame_shape, spec)
        name, raw = self._output(outputs)
        cxcywh, score, cls = self._decode(name, raw)
        hit = score > self.params["conf"]
        cxcywh, score, cls = cxcywh[hit], score[hit], cls[hit]
        half = cxcywh[:, 2:] / 2
        boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1).astype(np.float64)
        shift = (cls * (np.abs(boxes).max(initial=0) + 1))[:, None]
        keep = nms(boxes + shift, score, self.params["iou"], self.params["max_det"])
        corners = _to_frame(boxes[keep].reshape(-1, 2, 2), spec, frame_h, frame_w).reshape(-1, 4)
        return {"detections": [
            {"box": [float(v) for v in box], "score": float(s), "class": int(c), "label": self._label(int(c))}
            for box, s, c in zip(corners, score[keep], cls[keep])]}


# --- PP-OCR detection (DB) --------------------------------------------------------------------


class DBText(Postprocessor):
    """Differentiable-binarisation text detection (PP-OCR det) on a probability map [1, 1, H, W].

    Per 8-connected component of (map > threshold): the minimum-area rotated rectangle of its
    pixel centres (so slanted lines get slanted boxes, as PaddleOCR's cv2.minAreaRect does),
    dropped if its short side is < min_size; score = mean probability over the component's pixels
    (dropped below box_thresh); then grown by DB's unclip offset area * unclip_ratio / perimeter on
    every side (a rectangle's offset polygon is again a rectangle) and mapped to frame pixels.
    The largest max_candidates components are considered.
    """

    kind = "ppocr-det"
    schema = {"threshold": (0.3, _number(0, 1, lo_open=True)),
              "box_thresh": (0.6, _number(0, 1)),
              "unclip_ratio": (1.5, _number(0, lo_open=True)),
              "max_candidates": (1000, _number(1, integer=True)),
              "min_size": (3, _number(0)),
              "output": (None, _output_name)}

    def __call__(self, outputs, frame_shape=None, spec=None) -> dict:
        frame_h, frame_w = _frame_hw(self.kind, frame_shape, spec)
        name, raw = self._output(outputs)
        if raw.ndim != 4 or raw.shape[:2] != (1, 1) or 0 in raw.shape:
            raise EdgeSDKError(f"postprocess ppocr-det: output {name!r}: expected a probability map [1, 1, H, W], "
                               f"got {list(raw.shape)}")
        prob = raw[0, 0].astype(np.float32)
        p = self.params
        rows, starts, ends, labels = label_components(prob > p["threshold"])
        if labels.size == 0:
            return {"boxes": []}
        lengths = ends - starts
        area = np.bincount(labels, weights=lengths)
        pixels = np.flatnonzero(prob.ravel() > p["threshold"])  # row-major, as the runs are
        score = np.bincount(np.repeat(labels, lengths), weights=prob.ravel()[pixels]) / area
        run_order = np.argsort(labels, kind="stable")
        first = np.searchsorted(labels[run_order], np.arange(area.size))
        last = np.append(first[1:], labels.size)
        # map pixel centre -> model-input coordinates (the map may be smaller than the input)
        scale = np.array([spec.size[0] / prob.shape[1], spec.size[1] / prob.shape[0]])
        boxes, scores = [], []
        for c in np.argsort(-area, kind="stable")[:p["max_candidates"]]:
            if score[c] < p["box_thresh"]:
                continue
            rect = min_area_rect(np.array(_convex_hull(_row_extremes(run_order[first[c]:last[c]],
                                                                     rows, starts, ends))))
            if rect is None:
                continue
            u, v, (u0, u1), (v0, v1) = rect
            sides = (u1 - u0, v1 - v0)
            if min(sides) < p["min_size"]:
                continue
            offset = sides[0] * sides[1] * p["unclip_ratio"] / (2 * (sides[0] + sides[1]))
            if min(sides) + 2 * offset < p["min_size"] + 2:
                continue
            corners = np.array([a * u + b * v for a, b in ((u0 - offset, v0 - offset), (u1 + offset, v0 - offset),
                                                           (u1 + offset, v1 + offset), (u0 - offset, v1 + offset))])
            boxes.append(_to_frame((corners + 0.5) * scale, spec, frame_h, frame_w))
            scores.append(float(score[c]))
        boxes = [order_corners(b) for b in boxes]
        ordered = [i for line in reading_lines(boxes) for i in line]
        return {"boxes": [{"box": boxes[i].round(2).tolist(), "score": scores[i]} for i in ordered]}


# --- PP-OCR recognition (CTC) -----------------------------------------------------------------


class CTCText(Postprocessor):
    """Greedy CTC decode of per-step class probabilities [N, T, C] (PP-OCR rec's softmax output):
    best class per step, repeats merged, blanks (index 0) dropped; score = mean probability of
    the kept steps (0.0 for an empty string). labels is the character list, "" at index 0."""

    kind = "ppocr-rec"
    schema = {"output": (None, _output_name)}

    def __call__(self, outputs, frame_shape=None, spec=None) -> dict:
        name, raw = self._output(outputs)
        if raw.ndim != 3 or 0 in raw.shape:
            raise EdgeSDKError(f"postprocess ppocr-rec: output {name!r}: expected [N, T, classes], "
                               f"got {list(raw.shape)}")
        self._check_classes(name, raw.shape, raw.shape[2])
        ids, probs = raw.argmax(axis=2), raw.max(axis=2)
        kept = ids != 0
        kept[:, 1:] &= ids[:, 1:] != ids[:, :-1]
        texts, scores = [], []
        for row_ids, row_probs, row_kept in zip(ids, probs, kept):
            texts.append("".join(self.labels[i] for i in row_ids[row_kept]))
            scores.append(float(row_probs[row_kept].mean()) if row_kept.any() else 0.0)
        return {"text": texts, "score": scores}


# --- registry ---------------------------------------------------------------------------------

KINDS: dict[str, type[Postprocessor]] = {
    "none": Passthrough, "topk": TopK, "yolo": Yolo, "ppocr-det": DBText, "ppocr-rec": CTCText}


def check_params(kind: str, params: dict | None = None) -> dict:
    """A ``[postprocess]`` table's params checked (unknown kinds, unknown or bad params are errors
    naming them), defaults filled in; labels are not needed for this."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise EdgeSDKError(f"postprocess kind {kind!r} is not one of: {', '.join(KINDS)}")
    return _checked(kind, params, KINDS[kind].schema)


def get(kind: str, params: dict | None = None, labels: list[str] | None = None) -> Postprocessor:
    """The post-processor of a ``[postprocess]`` table: kind plus its params (a "kind" key in
    params is allowed if it agrees). Unknown kinds and params are errors naming them."""
    checked = check_params(kind, params)
    cls = KINDS[kind]
    if labels is not None:
        if isinstance(labels, str) or not all(isinstance(s, str) for s in labels):
            raise EdgeSDKError(f"postprocess {kind}: labels must be a list of strings")
        labels = list(labels)
    if kind == "ppocr-rec" and not labels:
        raise EdgeSDKError("postprocess ppocr-rec: needs labels, the rec model's character list (blank first)")
    return cls(checked, labels)


__all__ = ["get", "KINDS", "Postprocessor", "nms", "softmax", "label_components", "min_area_rect", "reading_lines"]
