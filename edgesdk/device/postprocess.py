"""Post-processing named by a target profile's ``[postprocess]`` table (stored in the manifest).

Device side: numpy only. ``get(kind, params, labels)`` returns a Postprocessor, a callable
``(outputs, frame_shape, spec) -> dict`` of JSON-friendly results:

- ``none``       the outputs as nested lists
- ``topk``       classifier scores -> {"topk": [{"index", "label", "score"}]}
- ``yolo``       YOLOv5/v8 decode + class-wise NMS -> {"detections": [{"box", "score", "class", "label"}]}
- ``ppocr-det``  DB text detection -> {"boxes": [{"box": 4 corner points, "score"}]} in reading order
- ``ppocr-rec``  CTC greedy decode -> {"text": [...], "score": [...]}

Boxes come back in frame pixels: model-input coordinates are mapped through
``PreprocessSpec.geometry`` (letterbox or stretch) and clipped to the frame. ``ocr_page`` chains
PP-OCR detection and recognition over a whole frame; ``ocr_bundles`` does it with two loaded bundles.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import EdgeSDKError
from .preprocess import PreprocessSpec, check_frame, preprocess_reference

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


def label_components(bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a boolean HxW map, O(HW) with no per-pixel Python loop.

    Works on horizontal runs of set pixels: runs in adjacent rows that touch (diagonals included)
    are joined by a vectorised union-find (hook roots onto smaller roots, then pointer-jump).
    Returns per run, in row-major order: row, start column, end column (exclusive), component
    label (0..n-1, numbered by first appearance).
    """
    h, w = bitmap.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = bitmap
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    n = rows.size
    if n == 0:
        return rows, starts, ends, np.zeros(0, np.int64)
    stride = w + 1
    start_key, end_key = rows * stride + starts, rows * stride + ends
    # Runs of the next row that touch run i form one contiguous index range [lo, hi).
    lo = np.searchsorted(end_key, (rows + 1) * stride + starts, side="left")
    hi = np.searchsorted(start_key, (rows + 1) * stride + ends, side="right")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    b = np.arange(a.size) - np.repeat(np.cumsum(count) - count, count) + np.repeat(lo, count)
    parent = np.arange(n)
    while a.size:
        pa, pb = parent[a], parent[b]
        apart = pa != pb
        if not apart.any():
            break
        a, b, pa, pb = a[apart], b[apart], pa[apart], pb[apart]
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))  # parent[i] <= i: no cycles
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    _, labels = np.unique(parent, return_inverse=True)
    return rows, starts, ends, labels.reshape(-1)


def _convex_hull(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Andrew's monotone chain; counter-clockwise, collinear points dropped."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def half(seq):
        chain = []
        for p in seq:
            while len(chain) >= 2 and ((chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1])
                                       - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(reversed(pts))
    return lower[:-1] + upper[:-1]


def _row_extremes(runs: np.ndarray, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list:
    """(x, y) of the leftmost and rightmost pixel of each row of one component (runs in row-major
    order): all the convex hull needs."""
    r = rows[runs]
    cut = np.flatnonzero(np.diff(r)) + 1
    firsts, lasts = np.r_[0, cut], np.r_[cut - 1, r.size - 1]
    y = r[firsts].tolist()
    return list(zip(starts[runs[firsts]].tolist(), y)) + list(zip((ends[runs[lasts]] - 1).tolist(), y))


def min_area_rect(hull: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Minimum-area enclosing rectangle of a convex polygon [M, 2] (rotating calipers: one side
    lies on a hull edge). Returns (u, v, [u_min, u_max], [v_min, v_max]) for unit axes u, v, or
    None when the polygon is degenerate (fewer than 3 corners)."""
    if len(hull) < 3:
        return None
    edges = np.roll(hull, -1, axis=0) - hull
    u = edges / np.hypot(edges[:, 0], edges[:, 1])[:, None]
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)
    pu, pv = hull @ u.T, hull @ v.T
    area = (pu.max(0) - pu.min(0)) * (pv.max(0) - pv.min(0))
    i = int(area.argmin())
    return u[i], v[i], np.array([pu[:, i].min(), pu[:, i].max()]), np.array([pv[:, i].min(), pv[:, i].max()])


def order_corners(pts: np.ndarray) -> np.ndarray:
    """Four corners as top-left, top-right, bottom-right, bottom-left (PaddleOCR's order)."""
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    (tl, bl), (tr, br) = sorted(by_x[:2], key=lambda p: p[1]), sorted(by_x[2:], key=lambda p: p[1])
    return np.array([tl, tr, br, bl])


def reading_lines(boxes: list[np.ndarray]) -> list[list[int]]:
    """Indices of 4-corner boxes grouped into lines, top to bottom, each line left to right.

    A box joins a line when its vertical centre lies within half a box height (its left side's
    length, so a slanted box does not swallow the lines around it) of the line's first box's centre.
    """
    lines: list[list[int]] = []
    bands = []
    for i in sorted(range(len(boxes)), key=lambda i: (boxes[i][:, 1].mean(), boxes[i][:, 0].min())):
        cy = boxes[i][:, 1].mean()
        for line, (centre, half) in zip(lines, bands):
            if abs(cy - centre) <= half:
                line.append(i)
                break
        else:
            lines.append([i])
            bands.append((cy, np.hypot(*(boxes[i][3] - boxes[i][0])) / 2))
    return [sorted(line, key=lambda i: boxes[i][:, 0].min()) for line in lines]


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


# --- end-to-end OCR ---------------------------------------------------------------------------


def ppocr_det_spec(frame_w: int, frame_h: int, limit_side: int = PPOCR_DET_LIMIT_SIDE) -> PreprocessSpec:
    """PP-OCR det input for one frame: aspect kept, the longer side scaled to limit_side, both
    sides rounded to multiples of 32 (the small stretch that rounding makes is undone by geometry).

    Small frames are scaled up too (PaddleOCR's limit_type "max" only scales down). Measured on
    skimage's page() (words of the page read right, of 49): at full size 43 either way; shrunk to
    288x143, 31 at its own size and 43 scaled up; shrunk to 192x96 (5-pixel text), 21 and 41.
    """
    r = limit_side / max(frame_w, frame_h)
    w, h = (max(PPOCR_DET_MULTIPLE, round(s * r / PPOCR_DET_MULTIPLE) * PPOCR_DET_MULTIPLE)
            for s in (frame_w, frame_h))
    return PreprocessSpec(size=(w, h), resize="stretch", color=PPOCR_COLOR, mean=PPOCR_MEAN, std=PPOCR_STD)


def _sample_bilinear(frame: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """frame (HxWx3) sampled at float pixel coordinates (centres at integers), edges clamped."""
    h, w = frame.shape[:2]
    xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (xs - x0).astype(np.float32)[..., None], (ys - y0).astype(np.float32)[..., None]
    top = frame[y0, x0] * (1 - fx) + frame[y0, x1] * fx
    bottom = frame[y1, x0] * (1 - fx) + frame[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def crop_text(frame: np.ndarray, box, height: int = PPOCR_REC_HEIGHT, max_width: int | None = None) -> np.ndarray:
    """The text inside a 4-corner box (tl, tr, br, bl) as an upright HxWx3 float32 image of the
    given height, aspect kept (squeezed to max_width if wider). One bilinear sampling does crop,
    rotation and resize at once; a box much taller than wide is vertical text and is turned a
    quarter counter-clockwise, as PaddleOCR does."""
    tl, tr, br, bl = np.asarray(box, np.float64)
    box_w = max(np.hypot(*(tr - tl)), np.hypot(*(br - bl)), 1.0)
    box_h = max(np.hypot(*(bl - tl)), np.hypot(*(br - tr)), 1.0)
    along, across = tr - tl, bl - tl
    if box_h / box_w >= PPOCR_VERTICAL_RATIO:  # read it top to bottom after turning
        tl, along, across = tr, br - tr, tl - tr
        box_w, box_h = box_h, box_w
    width = max(1, math.ceil(height * box_w / box_h))
    width = min(width, max_width) if max_width else width
    u = (np.arange(width) + 0.5) / width
    v = (np.arange(height) + 0.5) / height
    # continuous coordinates (pixel i spans [i, i + 1)) -> sample grid with centres at integers
    pts = tl + u[None, :, None] * along + v[:, None, None] * across - 0.5
    return _sample_bilinear(frame, pts[..., 0], pts[..., 1])


def rec_batch(crops: list[np.ndarray], width: int | None = None, size: int | None = None) -> np.ndarray:
    """Crops of equal height -> normalised NCHW batch, padded right (with 0 after normalising, as
    PaddleOCR does) to a common width: `width` if the model fixes it, else at least 320 and a
    multiple of 8. `size` pads the batch with empty rows for a model with a fixed batch size."""
    if width is None:
        width = max(PPOCR_REC_MIN_WIDTH, *(c.shape[1] for c in crops))
        width = -(-width // PPOCR_REC_MULTIPLE) * PPOCR_REC_MULTIPLE
    batch = np.zeros((max(len(crops), size or 0), 3, crops[0].shape[0], width), np.float32)
    mean, std = np.float32(PPOCR_MEAN), np.float32(PPOCR_STD)
    for i, crop in enumerate(crops):
        img = crop if PPOCR_COLOR == "bgr" else crop[:, :, ::-1]
        batch[i, :, :, :crop.shape[1]] = ((img - mean) / std).transpose(2, 0, 1)
    return batch


def _only_output(outputs, what: str) -> np.ndarray:
    if not isinstance(outputs, dict) or len(outputs) < 1:
        raise EdgeSDKError(f"ocr_page: {what} must return a dict of output name -> array, got {type(outputs).__name__}")
    return np.asarray(next(iter(outputs.values())))


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def ocr_page(det_run, rec_run, frame_bgr: np.ndarray, det_spec: PreprocessSpec | None = None,
             rec_height: int = PPOCR_REC_HEIGHT, *, keys: list[str], det_params: dict | None = None,
             limit_side: int = PPOCR_DET_LIMIT_SIDE, det_input: str = "x", rec_input: str = "x",
             rec_shape=None) -> dict:
    """Read the text of a BGR frame with PP-OCR det + rec models.

    det_run / rec_run: callables feeds -> outputs (e.g. a Session's ``run``) taking the inputs named
    det_input / rec_input. det_spec: the det input's PreprocessSpec; by default
    ppocr_det_spec(frame, limit_side). keys: the rec model's characters, blank first.
    det_params: the ppocr-det params. rec_shape: the rec input's declared [N, 3, H, W]; int dims
    are fixed (batches of exactly N, crops fitted to W), others dynamic.
    Returns {"lines": [{"text", "score", "box"}] in reading order, "text": the page, one line per
    row of boxes, boxes of one row joined by a space}.
    """
    frame = check_frame(frame_bgr)
    h, w = frame.shape[:2]
    fixed_n, _, fixed_h, fixed_w = (list(rec_shape) + [None] * 4)[:4] if rec_shape is not None else [None] * 4
    fixed_n, fixed_w = _fixed(fixed_n), _fixed(fixed_w)
    rec_height = _fixed(fixed_h) or rec_height
    spec = det_spec or ppocr_det_spec(w, h, limit_side)
    det = get("ppocr-det", det_params)
    rec = get("ppocr-rec", {}, keys)
    prob = _only_output(det_run({det_input: preprocess_reference(frame, spec)}), "det_run")
    boxes = det({"prob": prob}, (h, w), spec)["boxes"]
    crops = [crop_text(frame, b["box"], rec_height, fixed_w) for b in boxes]
    texts, scores = [""] * len(crops), [0.0] * len(crops)
    by_width = sorted(range(len(crops)), key=lambda i: crops[i].shape[1])  # less padding per batch
    step = fixed_n or PPOCR_REC_BATCH
    for k in range(0, len(by_width), step):
        idx = by_width[k:k + step]
        batch = rec_batch([crops[i] for i in idx], fixed_w, fixed_n)
        out = rec({"probs": _only_output(rec_run({rec_input: batch}), "rec_run")})
        for i, text, score in zip(idx, out["text"], out["score"]):
            texts[i], scores[i] = text, score
    lines = [{"text": t, "score": s, "box": b["box"]} for t, s, b in zip(texts, scores, boxes)]
    rows = reading_lines([np.asarray(b["box"]) for b in boxes])
    page = "\n".join(" ".join(texts[i] for i in row if texts[i]) for row in rows)
    return {"lines": lines, "text": page}


def ocr_bundles(det_model, rec_model, frame_bgr: np.ndarray, limit_side: int = PPOCR_DET_LIMIT_SIDE) -> dict:
    """ocr_page over two loaded bundles (edgesdk.load): a det bundle with a fixed input size keeps
    its own preprocessing, a dynamic one gets PP-OCR's per frame; a det bundle whose
    [postprocess] is ppocr-det lends its params; the rec bundle's labels are the keys."""
    det_in, rec_in = det_model.inputs[0], rec_model.inputs[0]
    static = all(_fixed(d) for d in det_in.shape)
    if not rec_model.labels:
        raise EdgeSDKError(f"{rec_model.root}: the rec bundle has no labels (its character list, blank first)")
    table = dict(det_model.manifest["postprocess"] or {})
    params = table if table.pop("kind", None) == "ppocr-det" else None
    return ocr_page(det_model.infer, rec_model.infer, frame_bgr,
                    det_spec=det_model.spec if static else None, keys=rec_model.labels, det_params=params,
                    limit_side=limit_side, det_input=det_in.name, rec_input=rec_in.name, rec_shape=rec_in.shape)


__all__ = ["get", "KINDS", "Postprocessor", "nms", "softmax", "label_components", "min_area_rect",
           "ocr_page", "ocr_bundles", "ppocr_det_spec", "crop_text", "rec_batch", "reading_lines"]
