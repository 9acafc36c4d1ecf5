"""The numpy reference preprocessing: the specification the native kernels are held to."""
import numpy as np
import pytest

from edgesdk.errors import EdgeSDKError
from edgesdk.device.preprocess import PreprocessSpec, check_frame, preprocess_reference, read_image

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("hw,size", [((480, 640), (224, 224)), ((1080, 1920), (640, 640)),
                                     ((37, 53), (100, 80)), ((300, 200), (64, 96)), ((1, 1), (8, 8))])
def test_bilinear_within_one_lsb_of_cv2(hw, size):
    frame = np.random.default_rng(sum(hw)).integers(0, 256, (*hw, 3), dtype=np.uint8)
    spec = PreprocessSpec(size=size, resize="stretch", color="bgr", layout="nhwc")
    ours = preprocess_reference(frame, spec)[0]
    theirs = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert np.abs(ours - theirs).max() <= 1.0


def test_nearest_equals_cv2():
    frame = np.random.default_rng(1).integers(0, 256, (123, 77, 3), dtype=np.uint8)
    spec = PreprocessSpec(size=(50, 200), resize="stretch", color="bgr", layout="nhwc", interp="nearest")
    np.testing.assert_array_equal(preprocess_reference(frame, spec)[0],
                                  cv2.resize(frame, (50, 200), interpolation=cv2.INTER_NEAREST))


def test_letterbox_normalise_layout_against_cv2_pipeline():
    frame = np.random.default_rng(2).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    spec = PreprocessSpec(size=(640, 640), resize="letterbox", pad=114, color="rgb",
                          mean=(0, 0, 0), std=(255, 255, 255), layout="nchw")
    left, top, nw, nh = spec.geometry(1920, 1080)
    assert (left, top, nw, nh) == (0, 140, 640, 360)
    canvas = np.full((640, 640, 3), 114, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True)
    ours = preprocess_reference(frame, spec)
    assert ours.shape == (1, 3, 640, 640) and ours.dtype == np.float32
    assert np.abs(ours - blob).max() <= 1.0 / 255 + 1e-6
    np.testing.assert_allclose(ours[:, :, :top], 114 / 255, rtol=1e-6)  # the pad band


def test_mean_std_per_model_channel_and_dtypes():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 20, 30  # B, G, R
    spec = PreprocessSpec(size=(4, 4), color="rgb", mean=(30, 20, 10), std=(2, 4, 5), layout="nhwc")
    out = preprocess_reference(frame, spec)
    np.testing.assert_allclose(out[0, 0, 0], [0, 0, 0])
    spec = PreprocessSpec(size=(4, 4), color="bgr", mean=(0, 0, 0), std=(2, 4, 5), layout="nchw", dtype="float16")
    out = preprocess_reference(frame, spec)
    assert out.dtype == np.float16 and out.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(out[0, :, 0, 0], [5, 5, 6])
    raw = preprocess_reference(frame, PreprocessSpec(size=(2, 2), dtype="uint8", color="rgb", layout="nhwc"))
    assert raw.dtype == np.uint8 and raw[0, 0, 0].tolist() == [30, 20, 10]


@pytest.mark.parametrize("kwargs,match", [
    ({"size": (0, 10)}, "size"), ({"resize": "crop"}, "resize"), ({"color": "gray"}, "color"),
    ({"layout": "chw"}, "layout"), ({"dtype": "int8"}, "dtype"), ({"pad": 300}, "pad"),
    ({"std": (1, 0, 1)}, "std"), ({"mean": (1, 2)}, "mean"), ({"dtype": "uint8", "std": (255,) * 3}, "uint8"),
])
def test_spec_errors(kwargs, match):
    with pytest.raises(EdgeSDKError, match=match):
        PreprocessSpec(**kwargs)


def test_spec_dict_round_trip_and_unknown_keys():
    spec = PreprocessSpec(size=(320, 240), resize="letterbox", mean=(1, 2, 3), std=(4, 5, 6))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(EdgeSDKError, match="unknown keys"):
        PreprocessSpec.from_dict({"size": [2, 2], "scale": 1})


@pytest.mark.parametrize("frame,match", [
    ([[1, 2, 3]], "numpy array"), (np.zeros((4, 4), np.uint8), "HxWx3"),
    (np.zeros((4, 4, 3), np.float32), "uint8"), (np.zeros((0, 4, 3), np.uint8), "empty"),
])
def test_bad_frames(frame, match):
    with pytest.raises(EdgeSDKError, match=match):
        check_frame(frame)


def test_read_image(tmp_path):
    img = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(EdgeSDKError, match="b.png"):
        read_image(tmp_path / "b.png")
    with pytest.raises(EdgeSDKError, match="no such image"):
        read_image(tmp_path / "c.png")
