"""PreprocessSpec and the pure-numpy reference implementation.

The reference is the specification the native kernels are tested against: camera frames arrive as
HxWx3 uint8 BGR (OpenCV's order); the model gets `size` (width, height), resized by bilinear
interpolation with OpenCV's INTER_LINEAR geometry (half-pixel centres, edge clamp) but computed in
float without rounding to uint8 in between, then letterboxed or stretched, colour-ordered,
normalised as (pixel - mean) / std per model channel, and laid out NCHW or NHWC with a batch dim.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgesdk.device.native import native_module as _native_module  # a name the tests swap out
from edgesdk.errors import EdgeSDKError

RESIZE_MODES = ("letterbox", "stretch")
INTERPOLATIONS = ("bilinear", "nearest")
COLORS = ("rgb", "bgr")
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("float32", "float16", "uint8")
MAX_THREADS = 1024  # row bands of one frame; more only costs thread starts


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _triple(value, name) -> tuple[float, float, float]:
    vals = [value] * 3 if _is_number(value) else list(value) if isinstance(value, (list, tuple)) else None
    if vals is None or len(vals) != 3 or not all(_is_number(v) and np.isfinite(v) for v in vals):
        raise EdgeSDKError(f"preprocess {name}: expected 3 finite numbers (one per channel), got {value!r}")
    return tuple(float(v) for v in vals)


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int] = (224, 224)  # model input width, height
    resize: str = "stretch"
    pad: int = 114
    color: str = "rgb"  # channel order the model wants; frames arrive BGR
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in the model's channel order
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "nchw"
    dtype: str = "float32"
    interp: str = "bilinear"

    def __post_init__(self):
        size = self.size
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v < 1 << 16
                           for v in size)):
            raise EdgeSDKError(f"preprocess size: expected [width, height], integers in 1..65535, got {size!r}")
        object.__setattr__(self, "size", tuple(int(v) for v in size))
        for name, allowed in (("resize", RESIZE_MODES), ("color", COLORS), ("layout", LAYOUTS),
                              ("dtype", DTYPES), ("interp", INTERPOLATIONS)):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in allowed:
                raise EdgeSDKError(f"preprocess {name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not isinstance(self.pad, (int, np.integer)) or isinstance(self.pad, bool) or not 0 <= self.pad <= 255:
            raise EdgeSDKError(f"preprocess pad: expected an integer 0..255, got {self.pad!r}")
        object.__setattr__(self, "pad", int(self.pad))
        mean, std = _triple(self.mean, "mean"), _triple(self.std, "std")
        if any(s == 0 for s in std):
            raise EdgeSDKError(f"preprocess std: must be non-zero, got {list(std)}")
        if self.dtype == "uint8" and (mean != (0.0, 0.0, 0.0) or std != (1.0, 1.0, 1.0)):
            raise EdgeSDKError("preprocess dtype uint8 carries raw pixels: mean must be 0 and std 1")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        if not isinstance(d, dict):
            raise EdgeSDKError(f"preprocess: expected a table of settings, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise EdgeSDKError(f"preprocess: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"], d["mean"], d["std"] = list(self.size), list(self.mean), list(self.std)
        return d

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        w, h = self.size
        return (1, 3, h, w) if self.layout == "nchw" else (1, h, w, 3)

    def geometry(self, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
        """(left, top, width, height) of the resized frame inside the model input.
        Letterbox keeps the aspect ratio and centres; stretch fills the input."""
        w, h = self.size
        if self.resize == "stretch":
            return 0, 0, w, h
        r = min(w / frame_w, h / frame_h)
        nw, nh = max(1, min(w, round(frame_w * r))), max(1, min(h, round(frame_h * r)))
        return (w - nw) // 2, (h - nh) // 2, nw, nh


def check_frame(frame) -> np.ndarray:
    """A frame must be HxWx3 uint8; errors name what was given instead."""
    if not isinstance(frame, np.ndarray):
        raise EdgeSDKError(f"frame: expected a numpy array HxWx3 uint8, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise EdgeSDKError(f"frame: expected shape HxWx3, got {list(frame.shape)}")
    if frame.dtype != np.uint8:
        raise EdgeSDKError(f"frame: expected dtype uint8, got {frame.dtype}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise EdgeSDKError(f"frame: empty image {list(frame.shape)}")
    return frame


def check_spec(spec) -> "PreprocessSpec":
    if not isinstance(spec, PreprocessSpec):
        raise EdgeSDKError(f"spec: expected an edgesdk.PreprocessSpec, got {type(spec).__name__} "
                           "(PreprocessSpec.from_dict makes one from a table of settings)")
    return spec


def _axis_bilinear(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis with OpenCV INTER_LINEAR geometry."""
    scale = src_len / dst_len
    s = (np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(s).astype(np.int64)
    f = (s - i0).astype(np.float32)
    f[i0 < 0] = 0.0
    i0 = np.clip(i0, 0, src_len - 1)
    i1 = np.minimum(i0 + 1, src_len - 1)
    return i0, i1, f


def _resize(frame: np.ndarray, nw: int, nh: int, interp: str) -> np.ndarray:
    h, w = frame.shape[:2]
    if interp == "nearest":  # OpenCV INTER_NEAREST: floor(dst * scale)
        ys = np.minimum((np.arange(nh) * (h / nh)).astype(np.int64), h - 1)
        xs = np.minimum((np.arange(nw) * (w / nw)).astype(np.int64), w - 1)
        return frame[ys][:, xs].astype(np.float32)
    y0, y1, fy = _axis_bilinear(h, nh)
    x0, x1, fx = _axis_bilinear(w, nw)
    img = frame.astype(np.float32)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def preprocess_reference(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The specification: a BGR uint8 frame -> the model input tensor with a batch dim."""
    frame = check_frame(frame)
    w, h = check_spec(spec).size
    left, top, nw, nh = spec.geometry(frame.shape[1], frame.shape[0])
    resized = _resize(frame, nw, nh, spec.interp)
    canvas = np.full((h, w, 3), float(spec.pad), dtype=np.float32)
    canvas[top:top + nh, left:left + nw] = resized
    if spec.color == "rgb":
        canvas = canvas[:, :, ::-1]
    if spec.dtype == "uint8":
        out = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    else:
        mean = np.asarray(spec.mean, np.float32)
        inv_std = (1.0 / np.asarray(spec.std, np.float64)).astype(np.float32)
        out = ((canvas - mean) * inv_std).astype(spec.dtype)
    out = out.transpose(2, 0, 1) if spec.layout == "nchw" else out
    return np.ascontiguousarray(out[None])


def preprocess(frame: np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None, threads: int = 1) -> np.ndarray:
    """A BGR uint8 frame -> the model input tensor `spec.output_shape` of `spec.dtype`, in one pass.

    Runs the native fused kernel (AVX2, NEON or scalar, chosen at run time) with the GIL released.
    The frame is read in place: rows may be strided (OpenCV ROIs, numpy slices) but pixels must be
    packed (strides[1] == 3, strides[2] == 1); other frames raise EdgeSDKError rather than being
    copied. `out`, when given, must be a writeable C-contiguous array of exactly the output shape and
    dtype; it is filled in place and returned. `threads` > 1 splits large outputs into row bands.
    Only when the native module is missing (a source tree without the built extension) does this
    fall back to the numpy `preprocess_reference`, which copies.
    """
    check_frame(frame)
    check_spec(spec)
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise EdgeSDKError(f"preprocess threads: expected an int in 1..{MAX_THREADS}, got {threads!r}")
    if out is None:
        out = np.empty(spec.output_shape, dtype=spec.dtype)
    native = _native_module()
    if native is None:
        ref = preprocess_reference(frame, spec)
        if not isinstance(out, np.ndarray) or out.shape != ref.shape or out.dtype != ref.dtype:
            raise EdgeSDKError(f"out: expected {list(ref.shape)} {ref.dtype}, got "
                               f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}")
        np.copyto(out, ref)
        return out
    return native.preprocess(frame, out, size=spec.size, resize=spec.resize, pad=spec.pad, color=spec.color,
                             mean=spec.mean, std=spec.std, layout=spec.layout, dtype=spec.dtype,
                             interp=spec.interp, threads=int(threads))


def read_image(path) -> np.ndarray:
    """An image file as HxWx3 uint8 BGR (OpenCV's order), with an EdgeSDKError naming the file."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise EdgeSDKError(f"{p}: no such image file")
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise EdgeSDKError(f"{p}: not a readable image")
        return img
    try:
        from PIL import Image
    except ImportError:
        raise EdgeSDKError("reading image files needs opencv-python(-headless) or Pillow") from None
    try:
        with Image.open(p) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])
    except Exception as e:
        raise EdgeSDKError(f"{p}: not a readable image ({e})") from None
