"""End-to-end PP-OCR over a whole frame: detection (DB) -> crops of each text box -> recognition
(CTC) in batches, in reading order. ``ocr_page`` takes two run functions (sessions or models),
``ocr_bundles`` two loaded bundles. Device side: numpy only."""
from __future__ import annotations

import math

import numpy as np

from edgesdk.device.postprocess import (PPOCR_COLOR, PPOCR_DET_LIMIT_SIDE, PPOCR_DET_MULTIPLE, PPOCR_MEAN,
                                        PPOCR_REC_BATCH, PPOCR_REC_HEIGHT, PPOCR_REC_MIN_WIDTH,
                                        PPOCR_REC_MULTIPLE, PPOCR_STD, PPOCR_VERTICAL_RATIO, get)
from edgesdk.device.preprocess import PreprocessSpec, check_frame, preprocess_reference
from edgesdk.device.textgeom import reading_lines
from edgesdk.errors import EdgeSDKError


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


__all__ = ["ocr_page", "ocr_bundles", "ppocr_det_spec", "crop_text", "rec_batch"]
