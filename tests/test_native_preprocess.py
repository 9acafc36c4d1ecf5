"""edgesdk.preprocess: the native fused kernels held to the numpy reference, to OpenCV, and to
their zero-copy contract. Every kernel set this machine has runs (automatic choice and scalar)."""
import importlib
import threading

import numpy as np
import pytest

import edgesdk
from edgesdk import _native
from edgesdk.errors import EdgeSDKError
from edgesdk.device.preprocess import PreprocessSpec, preprocess, preprocess_reference, read_image

# the module (the package attribute `edgesdk.preprocess` is the public function)
pre = importlib.import_module("edgesdk.device.preprocess")
IMAGENET = dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


@pytest.fixture(params=["auto", "scalar"])
def kernels(request):
    """Run the test on the automatically chosen kernels (AVX2 / NEON here) and on the scalar ones."""
    _native.set_kernels(request.param)
    yield _native.preprocess_kernels()
    _native.set_kernels("auto")


def float32_tolerance(spec: PreprocessSpec) -> float:
    """1e-5, plus 8 float32 ulps of a pixel in 128..256 seen through 1/std: the kernels blend
    horizontally first (caching rows), the reference vertically first, so roundings differ. For
    normalised outputs (std >= ~12, e.g. /255 or ImageNet) this is 1e-5 within 1e-6."""
    return 1e-5 + 255 * 2.0 ** -21 * max(abs(1 / s) for s in spec.std)


def random_frame(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def random_spec(rng, dtype=None) -> PreprocessSpec:
    dtype = dtype or str(rng.choice(["float32", "float16", "uint8"]))
    fields = dict(size=(int(rng.integers(1, 700)), int(rng.integers(1, 700))),
                  resize=str(rng.choice(["letterbox", "stretch"])), pad=int(rng.integers(0, 256)),
                  color=str(rng.choice(["rgb", "bgr"])), layout=str(rng.choice(["nchw", "nhwc"])),
                  interp=str(rng.choice(["bilinear", "bilinear", "nearest"])), dtype=dtype)
    if dtype != "uint8":
        fields["mean"] = tuple(float(rng.choice([0.0, 127.5, 123.675, 255.0, rng.uniform(0, 255)])) for _ in range(3))
        fields["std"] = tuple(float(rng.choice([1.0, 255.0, 58.395, 127.5, rng.uniform(0.5, 100)])) for _ in range(3))
    return PreprocessSpec(**fields)


# frame sizes (h, w): degenerate, odd, camera and random ones
SIZES = [(1, 1), (1, 2), (2, 1), (3, 5), (7, 640), (480, 1), (1080, 1920), (720, 1280), (479, 641), (33, 17)]


def check_against_reference(frame, spec, ours):
    ref32 = preprocess_reference(frame, PreprocessSpec(**{**spec.to_dict(), "dtype": "float32"}))
    assert ours.shape == spec.output_shape and ours.dtype == np.dtype(spec.dtype)
    if spec.dtype == "float32":
        err = np.abs(ours.astype(np.float64) - ref32).max()
        assert err <= float32_tolerance(spec), (spec, frame.shape, err)
    elif spec.dtype == "float16":
        ref16 = ref32.astype(np.float16)
        # the reference rounded to half; ours may round a float32 a few ulps away to the next half
        step = np.spacing(np.abs(ref16)).astype(np.float64)
        diff = np.abs(ours.astype(np.float64) - ref16.astype(np.float64))
        assert (diff <= step + float32_tolerance(spec)).all(), (spec, frame.shape, diff.max())
        assert np.mean(ours == ref16) > 0.99
    else:
        ref8 = preprocess_reference(frame, spec)
        diff = np.abs(ours.astype(np.int16) - ref8)
        assert diff.max() <= 1 and np.mean(diff == 0) > 0.99, (spec, frame.shape)


@pytest.mark.parametrize("case", range(40))
def test_random_specs_match_reference(kernels, case):
    rng = np.random.default_rng(1000 + case)
    h, w = SIZES[case % len(SIZES)] if case < 2 * len(SIZES) else tuple(int(v) for v in rng.integers(1, 900, 2))
    frame = random_frame(rng, h, w)
    spec = random_spec(rng)
    check_against_reference(frame, spec, preprocess(frame, spec))


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("norm", ["div255", "imagenet"])
def test_normalised_float32_within_1e5(kernels, hw, norm):
    rng = np.random.default_rng(sum(hw))
    frame = random_frame(rng, *hw)
    norm_fields = dict(std=(255.0,) * 3) if norm == "div255" else IMAGENET
    for size, resize in [((640, 640), "letterbox"), ((224, 224), "stretch"), ((97, 301), "letterbox")]:
        spec = PreprocessSpec(size=size, resize=resize, color="rgb", **norm_fields)
        err = np.abs(preprocess(frame, spec) - preprocess_reference(frame, spec)).max()
        assert err <= 1e-5, (hw, size, err)


def test_real_photos_all_dtypes_and_layouts(kernels, real_images):
    paths = sorted(real_images.values())[:6]
    assert paths, "no real photos available"
    rng = np.random.default_rng(7)
    for path in paths:
        frame = read_image(path)
        for dtype in ("float32", "float16", "uint8"):
            for layout in ("nchw", "nhwc"):
                norm = dict(mean=(0.0,) * 3, std=(255.0,) * 3) if dtype != "uint8" else {}
                spec = PreprocessSpec(size=(int(rng.integers(64, 700)), int(rng.integers(64, 700))),
                                      resize="letterbox", color="rgb", layout=layout, dtype=dtype, **norm)
                check_against_reference(frame, spec, preprocess(frame, spec))


@pytest.mark.parametrize("hw,size", [((480, 640), (224, 224)), ((1080, 1920), (640, 640)), ((37, 53), (100, 80)),
                                     ((300, 200), (64, 96)), ((1, 1), (8, 8)), ((719, 1283), (416, 415))])
def test_stretch_uint8_within_one_lsb_of_cv2(kernels, hw, size):
    cv2 = pytest.importorskip("cv2")
    frame = random_frame(np.random.default_rng(sum(hw)), *hw)
    spec = PreprocessSpec(size=size, resize="stretch", color="bgr", layout="nhwc", dtype="uint8")
    theirs = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
    assert np.abs(preprocess(frame, spec)[0].astype(np.int16) - theirs).max() <= 1


def test_nearest_equals_cv2(kernels):
    cv2 = pytest.importorskip("cv2")
    frame = random_frame(np.random.default_rng(1), 123, 77)
    for size in [(50, 200), (300, 31), (77, 123)]:
        spec = PreprocessSpec(size=size, resize="stretch", color="bgr", layout="nhwc", dtype="uint8", interp="nearest")
        np.testing.assert_array_equal(preprocess(frame, spec)[0],
                                      cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST))


def test_letterbox_matches_cv2_blob_pipeline():
    cv2 = pytest.importorskip("cv2")
    frame = random_frame(np.random.default_rng(2), 1080, 1920)
    spec = PreprocessSpec(size=(640, 640), resize="letterbox", pad=114, color="rgb", std=(255.0,) * 3)
    left, top, nw, nh = spec.geometry(1920, 1080)
    canvas = np.full((640, 640, 3), 114, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True)
    ours = preprocess(frame, spec)
    assert np.abs(ours - blob).max() <= 1 / 255 + 1e-6
    np.testing.assert_allclose(ours[:, :, :top], 114 / 255, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_threads_identical_to_one(kernels, dtype, layout):
    frame = random_frame(np.random.default_rng(3), 1080, 1920)
    norm = dict(std=(255.0,) * 3) if dtype != "uint8" else {}
    spec = PreprocessSpec(size=(640, 640), resize="letterbox", dtype=dtype, layout=layout, **norm)
    one = preprocess(frame, spec, threads=1)
    for n in (2, 3, 8):
        np.testing.assert_array_equal(preprocess(frame, spec, threads=n), one)


def test_out_written_in_place_and_returned():
    frame = random_frame(np.random.default_rng(4), 480, 640)
    spec = PreprocessSpec(size=(320, 320), resize="letterbox", std=(255.0,) * 3)
    out = np.full(spec.output_shape, np.nan, np.float32)
    ptr = out.ctypes.data
    result = preprocess(frame, spec, out)
    assert result is out and out.ctypes.data == ptr
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, preprocess_reference(frame, spec), atol=1e-5, rtol=0)


def test_frame_read_in_place_not_copied(kernels):
    rng = np.random.default_rng(5)
    big = random_frame(rng, 720, 1280)
    spec = PreprocessSpec(size=(224, 224), resize="letterbox", std=(255.0,) * 3, color="rgb")
    readonly = big.view()
    readonly.flags.writeable = False
    roi = big[100:611, 33:1001]  # an OpenCV-style ROI: strided rows, packed pixels
    flipped = big[::-1]  # negative row stride
    assert not roi.flags.c_contiguous and roi.strides[1:] == (3, 1)
    for view in (readonly, roi, flipped):
        ours = preprocess(view, spec)
        # the reference of a contiguous copy: the native path must read the same pixels in place
        np.testing.assert_allclose(ours, preprocess_reference(np.ascontiguousarray(view), spec), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad,message", [
    (lambda f: f.astype(np.int32), "dtype uint8, got int32"),
    (lambda f: f.astype(np.float32), "dtype uint8, got float32"),
    (lambda f: f[:, ::2], r"pixels must be packed \(strides\[1\] == 3"),
    (lambda f: f[:, :, ::-1], r"pixels must be packed"),
    (lambda f: np.asfortranarray(f), r"pixels must be packed"),
    (lambda f: f[:, :, :2], r"HxWx3, got \[8, 8, 2\]"),
    (lambda f: f[0], r"HxWx3, got \[8, 3\]"),
    (lambda f: f[:0], r"empty image"),
    (lambda f: f.tolist(), r"numpy array HxWx3 uint8, got list"),
])
def test_frames_that_would_need_a_copy_raise(bad, message):
    frame = np.zeros((8, 8, 3), np.uint8)
    spec = PreprocessSpec(size=(4, 4))
    with pytest.raises(EdgeSDKError, match=message):
        preprocess(bad(frame), spec)
    # the binding refuses them on its own too, with the same kind of error
    if isinstance(bad(frame), np.ndarray):
        with pytest.raises(EdgeSDKError, match=message):
            _native.preprocess(bad(frame), np.empty(spec.output_shape, np.float32), **_kwargs(spec))


def _kwargs(spec):
    d = spec.to_dict()
    return dict(size=d["size"], resize=d["resize"], pad=d["pad"], color=d["color"], mean=d["mean"], std=d["std"],
                layout=d["layout"], dtype=d["dtype"], interp=d["interp"])


@pytest.mark.parametrize("make_out,message", [
    (lambda: np.empty((1, 3, 4, 5), np.float32), r"out: expected \[1, 3, 4, 4\] float32, got \[1, 3, 4, 5\] float32"),
    (lambda: np.empty((1, 3, 4, 4), np.float64), r"got \[1, 3, 4, 4\] float64"),
    (lambda: np.empty((1, 3, 4, 4), np.float16), r"got \[1, 3, 4, 4\] float16"),
    (lambda: np.empty((1, 4, 4, 3), np.float32), r"got \[1, 4, 4, 3\]"),
    (lambda: np.empty((1, 3, 4, 8), np.float32)[..., ::2], r"C-contiguous"),
    (lambda: np.empty((1, 3, 4, 4), ">f4"), r"got \[1, 3, 4, 4\] >f4"),
    (lambda: [[0.0]], r"out: expected a numpy array"),
])
def test_bad_out_raises(make_out, message):
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(EdgeSDKError, match=message):
        preprocess(frame, PreprocessSpec(size=(4, 4)), make_out())


def test_readonly_or_overlapping_out_raises():
    frame = np.zeros((8, 8, 3), np.uint8)
    spec = PreprocessSpec(size=(4, 4), dtype="uint8", layout="nhwc")
    out = np.empty(spec.output_shape, np.uint8)
    out.flags.writeable = False
    with pytest.raises(EdgeSDKError, match="read-only"):
        preprocess(frame, spec, out)
    buf = np.zeros(200, np.uint8)
    frame_in_buf = buf[:192].reshape(8, 8, 3)
    out_in_buf = buf[144:192].reshape(1, 4, 4, 3)  # the frame's last two rows
    with pytest.raises(EdgeSDKError, match="shares memory with the frame"):
        preprocess(frame_in_buf, spec, out_in_buf)


def test_bad_arguments_raise():
    frame = np.zeros((8, 8, 3), np.uint8)
    spec = PreprocessSpec(size=(4, 4))
    with pytest.raises(EdgeSDKError, match="threads"):
        preprocess(frame, spec, threads=0)
    out = np.empty(spec.output_shape, np.float32)
    with pytest.raises(EdgeSDKError, match="resize: 'fill' is not one of letterbox, stretch"):
        _native.preprocess(frame, out, **{**_kwargs(spec), "resize": "fill"})
    with pytest.raises(EdgeSDKError, match="pad: expected 0..255, got 300"):
        _native.preprocess(frame, out, **{**_kwargs(spec), "pad": 300})
    with pytest.raises(EdgeSDKError, match="std must be non-zero"):
        _native.preprocess(frame, out, **{**_kwargs(spec), "std": (1.0, 0.0, 1.0)})
    with pytest.raises(EdgeSDKError, match="not available"):
        _native.set_kernels("sse9")
    assert _native.preprocess_kernels() == _native.build_info()["kernels"]


def test_rgb_frames_through_the_binding():
    """The C++ API takes RGB frames too (frame_color): the model sees the same channels."""
    frame = random_frame(np.random.default_rng(6), 50, 70)
    rgb_frame = np.ascontiguousarray(frame[:, :, ::-1])
    for color in ("rgb", "bgr"):
        spec = PreprocessSpec(size=(32, 32), color=color, std=(255.0,) * 3)
        out = np.empty(spec.output_shape, np.float32)
        _native.preprocess(rgb_frame, out, **_kwargs(spec), frame_color="rgb")
        np.testing.assert_array_equal(out, preprocess(frame, spec))


def test_gil_released_during_the_kernel():
    """While one thread is inside a long native call, another thread runs Python code: ticks
    time-stamped by the main thread fall inside the call's window. With the GIL held for the call
    none could, so one tick is proof; a few attempts only absorb a busy machine not scheduling the
    main thread for that long."""
    import time

    frame = random_frame(np.random.default_rng(8), 1080, 1920)
    spec = PreprocessSpec(size=(2048, 2048), resize="letterbox", std=(255.0,) * 3)
    out = np.empty(spec.output_shape, np.float32)
    preprocess(frame, spec, out)  # touch the pages first
    seen = []
    for _ in range(5):
        window = []
        started = threading.Event()

        def work():
            started.set()
            t0 = time.perf_counter()
            preprocess(frame, spec, out, threads=1)
            window.extend([t0, time.perf_counter()])

        t = threading.Thread(target=work)
        t.start()
        started.wait()
        ticks = []
        while t.is_alive():
            ticks.append(time.perf_counter())
        t.join()
        t0, t1 = window
        inner = [x for x in ticks if t0 + 0.25 * (t1 - t0) < x < t1 - 0.25 * (t1 - t0)]
        seen.append(f"{len(inner)} in {(t1 - t0) * 1e3:.1f} ms")
        if inner:
            return
    pytest.fail(f"no tick in the middle of the native call in any attempt: {seen}")


def test_public_api_and_fallback(monkeypatch):
    assert edgesdk.preprocess is preprocess
    frame = random_frame(np.random.default_rng(9), 90, 160)
    spec = PreprocessSpec(size=(64, 64), resize="letterbox", std=(255.0,) * 3)
    native_out = preprocess(frame, spec)
    # without the native module the numpy reference answers, still into the caller's array
    monkeypatch.setattr(pre, "_native_module", lambda: None)
    out = np.empty(spec.output_shape, np.float32)
    assert preprocess(frame, spec, out) is out
    np.testing.assert_array_equal(out, preprocess_reference(frame, spec))
    np.testing.assert_allclose(native_out, out, atol=1e-5, rtol=0)
    with pytest.raises(EdgeSDKError, match="out: expected"):
        preprocess(frame, spec, np.empty((1, 3, 64, 64), np.float64))
