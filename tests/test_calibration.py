"""Calibration feeds: real photos through the device's preprocessing, seeded subsets, clear errors."""
import io

import numpy as np
import pytest

import edgesdk
from edgesdk.backends.base import TensorInfo
from edgesdk.build.calibration import (FeedReader,
                                       Progress,
                                       calibration_feeds,
                                       list_images,
                                       select_images,
                                       split_for_calibration)
from edgesdk.errors import EdgeSDKError
from edgesdk.device.preprocess import PreprocessSpec, read_image
from edgesdk.build.quantize import Budget, QuantizeSettings

IMAGES = TensorInfo("images", (1, 3, 224, 224), "float32")


def test_feeds_are_what_the_device_computes(calib_images, effnet_preprocess):
    spec = PreprocessSpec(**effnet_preprocess)
    feeds = calibration_feeds(calib_images[:3], [IMAGES], spec)
    assert len(feeds) == 3 and list(feeds[0]) == ["images"]
    for path, feed in zip(calib_images, feeds):
        want = edgesdk.preprocess(read_image(path), spec)
        assert feed["images"].shape == (1, 3, 224, 224) and feed["images"].dtype == np.float32
        np.testing.assert_array_equal(feed["images"], want)
    # frames work as well as paths
    frames = calibration_feeds([read_image(p) for p in calib_images[:2]], [IMAGES], spec)
    np.testing.assert_array_equal(frames[1]["images"], feeds[1]["images"])


def test_size_and_layout_follow_the_input(calib_images):
    nhwc = TensorInfo("x", (2, 96, 128, 3), "float32")
    feeds = calibration_feeds(calib_images[:5], [nhwc], PreprocessSpec(mean=127.0, std=128.0))
    assert len(feeds) == 2  # batches of 2; the fifth image does not fill one
    x = feeds[0]["x"]
    assert x.shape == (2, 96, 128, 3) and not np.array_equal(x[0], x[1])
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_seeded_selection_and_held_back_split(calib_images):
    a, rest = select_images(calib_images, 10, seed=3)
    assert a == select_images(calib_images, 10, seed=3)[0]
    assert a != select_images(calib_images, 10, seed=4)[0]
    assert len(a) == 10 and not set(a) & set(rest) and set(a) | set(rest) == set(calib_images)
    calib, held = split_for_calibration(calib_images, 100)
    assert len(held) == max(1, len(calib_images) // 5) and len(calib) + len(held) == len(calib_images)
    calib, held = split_for_calibration(calib_images, 8)
    assert len(calib) == 8 and len(held) == len(calib_images) - 8
    assert split_for_calibration(calib_images[:1], 100) == (calib_images[:1], [])


def test_bad_sources_are_named(tmp_path, calib_images):
    with pytest.raises(EdgeSDKError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(EdgeSDKError, match="no such image folder"):
        list_images(tmp_path / "missing")
    with pytest.raises(EdgeSDKError, match="empty"):
        list_images([])
    junk = tmp_path / "broken.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(EdgeSDKError, match="broken.png: not a readable image"):
        calibration_feeds(tmp_path, [IMAGES], None)
    with pytest.raises(EdgeSDKError, match="uint8"):
        calibration_feeds([np.zeros((8, 8, 3), np.float32)], [IMAGES], None)
    with pytest.raises(EdgeSDKError, match="not an image input"):
        calibration_feeds(calib_images[:1], [TensorInfo("ids", (1, 16), "int64")], None)
    with pytest.raises(EdgeSDKError, match="dynamic dims"):
        calibration_feeds(calib_images[:1], [TensorInfo("x", ("n", 3, "h", "w"), "float32")], None)
    with pytest.raises(EdgeSDKError, match="positive integer"):
        select_images(calib_images, 0)


def test_reader_and_progress(calib_images):
    feeds = calibration_feeds(calib_images[:2], [IMAGES], None)
    r = FeedReader(feeds)
    assert r.get_next() is feeds[0] and r.get_next() is feeds[1] and r.get_next() is None
    r.rewind()
    assert r.get_next() is feeds[0] and len(r) == 2
    out = io.StringIO()
    bar = Progress(8, "calibrate", stream=out)
    for _ in range(8):
        bar.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("edgesdk: calibrate [" + "#" * 30 + "] 8/8")


def test_progress_on_a_terminal_is_a_tqdm_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = Progress(8, "calibrate", stream=out)
    for _ in range(8):
        bar.update()
    text = out.getvalue()
    assert "\r" in text and text.rstrip().endswith("]") and "edgesdk: calibrate: 100%" in text
    assert "8/8" in text.splitlines()[-1]


def test_profile_quantize_table():
    s = QuantizeSettings.from_profile({"calib_images": 50, "max_top1_drop": 0.01, "method": "minmax", "seed": 2})
    assert s == QuantizeSettings(50, "minmax", 2, Budget(0.01, None), method_given=True)
    # no method named: kl, and the quantize stage may try min/max before keeping layers float
    assert not QuantizeSettings.from_profile({"max_top1_drop": 0.01}).method_given
    assert QuantizeSettings.from_profile(None) == QuantizeSettings() and not QuantizeSettings().budget
    for bad, msg in (({"calib_images": 0}, "calib_images"), ({"method": "entropy"}, "method"),
                     ({"max_top1_drop": 2}, "max_top1_drop"), ({"min_cosine": "high"}, "min_cosine"),
                     ({"seed": 1.5}, "seed")):
        with pytest.raises(EdgeSDKError, match=msg):
            QuantizeSettings.from_profile(bad)
