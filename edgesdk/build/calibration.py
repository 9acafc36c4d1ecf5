"""Calibration data for int8: images -> feed dicts through the target's preprocessing.

Frames go through `edgesdk.preprocess.preprocess`, the native kernel the device runs, so the ranges
an int8 quantizer measures are those of the tensors the board will feed. Build side; numpy only.

    feeds = calibration_feeds("photos/", inputs, spec, count=100, seed=0)
    reader = FeedReader(feeds)          # get_next() -> feed dict or None; rewind()
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np

from edgesdk.backends.base import TensorInfo
from edgesdk.errors import EdgeSDKError
from edgesdk.device.preprocess import PreprocessSpec, preprocess, read_image

DEFAULT_CALIB_IMAGES = 100
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class CalibrationReader(Protocol):
    """What an engine's quantizer pulls calibration data from (onnxruntime's reader protocol)."""

    def get_next(self) -> dict[str, np.ndarray] | None: ...

    def rewind(self) -> None: ...


class FeedReader:
    """A CalibrationReader over a list of feed dicts; rewind() starts it again."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = list(feeds)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.feeds)


class Progress:
    """Progress of a long build step on stderr: tqdm's bar on a terminal; in a pipe or a log, one plain
    line per quarter (a redrawn bar there is a wall of carriage returns)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30):
        self.total, self.label, self.width = max(int(total), 1), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._quarter = -1
        self._t0 = time.perf_counter()
        self._bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=f"edgesdk: {label}", file=self.stream, ncols=80,
                             unit="batch", dynamic_ncols=False)

    def update(self, n: int = 1) -> None:
        n = min(n, self.total - self.done)
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if self.done == self.total:
                self._bar.close()
            return
        quarter = 4 * self.done // self.total
        if quarter != self._quarter:
            self._quarter = quarter
            filled = self.width * self.done // self.total
            self.stream.write(f"edgesdk: {self.label:<10}[{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{self.done}/{self.total} {time.perf_counter() - self._t0:.1f} s\n")
            self.stream.flush()


def image_files(source: str | Path) -> list[Path]:
    """The images `--calib` names: a folder (its images, sorted), a single image file, or a glob
    pattern (`photos/*.jpg`, `shots/**/*.png`)."""
    d = Path(source)
    if d.is_file():
        if d.suffix.lower() not in IMAGE_SUFFIXES:
            raise EdgeSDKError(f"{d}: no such image folder, and not an image file ({', '.join(IMAGE_SUFFIXES)})")
        return [d]
    if not d.is_dir() and any(c in str(source) for c in "*?["):
        import glob

        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise EdgeSDKError(f"{source}: the pattern matches no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not d.is_dir():
        raise EdgeSDKError(f"{d}: no such image folder, image file or pattern")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgeSDKError(f"{d}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def image_layout(t: TensorInfo) -> str | None:
    """'nchw' / 'nhwc' for a float 4-D input with 3 channels, else None."""
    if len(t.shape) != 4 or not t.dtype.startswith("float"):
        return None
    if t.shape[1] == 3:
        return "nchw"
    if t.shape[3] == 3:
        return "nhwc"
    return None


def default_spec(t: TensorInfo, shape: tuple[int, ...]) -> PreprocessSpec:
    """ImageNet normalisation, stretched to the input's size: the common classifier convention."""
    layout = image_layout(t) or "nchw"
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    return PreprocessSpec(size=(w, h), resize="stretch", color="rgb", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          layout=layout, dtype=t.dtype if t.dtype in ("float32", "float16") else "float32")


def select_images(images: list, count: int, seed: int = 0) -> tuple[list, list]:
    """A seeded choice of `count` items and the rest (held back for the accuracy check), each in
    the original order. The same seed and list give the same split on every machine."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise EdgeSDKError(f"calibration image count must be a positive integer, got {count!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise EdgeSDKError(f"calibration seed must be an integer, got {seed!r}")
    order = np.random.default_rng(seed).permutation(len(images))
    chosen = set(order[:count].tolist())
    return ([x for k, x in enumerate(images) if k in chosen],
            [x for k, x in enumerate(images) if k not in chosen])


def split_for_calibration(images: list, count: int = DEFAULT_CALIB_IMAGES, seed: int = 0) -> tuple[list, list]:
    """(calibration images, held-back images). At most `count` calibrate; at least a fifth of a
    folder (and one image) is held back so the accuracy budget is checked on images the quantizer
    did not see. A single image calibrates and nothing is held back."""
    if len(images) < 2:
        return list(images), []
    n = min(count, len(images) - max(1, len(images) // 5))
    return select_images(images, n, seed)


def list_images(source) -> list:
    """An image folder, a list of paths or an iterable of HxWx3 uint8 BGR frames -> a list of either."""
    if isinstance(source, (str, Path)):
        return image_files(source)
    if isinstance(source, np.ndarray):
        raise EdgeSDKError("calibration images: give a list of frames, not one array")
    items = list(source)
    if not items:
        raise EdgeSDKError("calibration images: the list is empty")
    return items


def _frame(item) -> np.ndarray:
    if isinstance(item, (str, Path)):
        return read_image(item)  # EdgeSDKError naming the file when unreadable
    if isinstance(item, np.ndarray):
        return item  # preprocess() checks HxWx3 uint8 and names what was given
    raise EdgeSDKError(f"calibration images: expected image paths or HxWx3 uint8 frames, got {type(item).__name__}")


def input_spec(t: TensorInfo, shape: tuple[int, ...], spec: PreprocessSpec | None) -> PreprocessSpec | None:
    """The spec for one image input: the caller's normalisation and resize, with size, layout and
    dtype following the input. None when the input is not an image."""
    if not image_layout(t):
        return None
    base = default_spec(t, shape)
    return base if spec is None else PreprocessSpec(
        **{**spec.to_dict(), "size": base.size, "layout": base.layout, "dtype": base.dtype})


def calibration_feeds(images, inputs: list[TensorInfo], spec: PreprocessSpec | None,
                      shapes: dict[str, tuple[int, ...]] | None = None, progress: bool | Progress = False,
                      label: str = "calibrate") -> list[dict[str, np.ndarray]]:
    """One feed dict per batch of images, keyed by the model's input names.

    `images` is a folder, a list of paths or of BGR frames (use split_for_calibration first to pick
    a subset). A batch-N input takes N consecutive images; a remainder that does not fill a batch
    is dropped. Only image inputs can be calibrated from images: any other input is an error."""
    items = list_images(images)
    shapes = dict(shapes or {})
    if not inputs:
        raise EdgeSDKError("calibration: the model has no inputs")
    if len(inputs) != 1:
        raise EdgeSDKError(f"calibration from images needs a model with one image input; this one has "
                           f"{[t.name for t in inputs]}")
    t = inputs[0]
    shape = shapes.get(t.name) or (t.shape if t.is_static else None)
    if shape is None:
        raise EdgeSDKError(f"input {t.name!r} has dynamic dims {list(t.shape)}: give a shape for calibration, "
                           f"e.g. --shape {t.name}=1x3x224x224")
    shape = tuple(int(d) for d in shape)
    s = input_spec(t, shape, spec)
    if s is None:
        raise EdgeSDKError(f"calibration: input {t.name!r} {list(t.shape)} {t.dtype} is not an image input "
                           "(4-D float with 3 channels)")
    batch = shape[0]
    if len(items) < batch:
        raise EdgeSDKError(f"calibration: input {t.name!r} takes batches of {batch}; got {len(items)} image(s)")
    bar = progress if isinstance(progress, Progress) else Progress(len(items) // batch, label) if progress else None
    feeds = []
    for k in range(0, len(items) - batch + 1, batch):
        x = np.empty((batch, *s.output_shape[1:]), dtype=s.dtype)
        for j in range(batch):
            preprocess(_frame(items[k + j]), s, out=x[j:j + 1])
        feeds.append({t.name: x})
        if bar:
            bar.update()
    return feeds


__all__ = ["CalibrationReader", "FeedReader", "Progress", "DEFAULT_CALIB_IMAGES", "select_images",
           "split_for_calibration", "list_images", "input_spec", "calibration_feeds"]
