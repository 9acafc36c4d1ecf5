"""Geometry of detected text regions (numpy only): connected components of a bitmap, convex hulls,
minimum-area rectangles, corner order and reading order. The DB decoder (postprocess) and the page
pipeline (ocr) use it."""
from __future__ import annotations

import numpy as np


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
