"""The engines built into edgesdk._native on real EfficientNet-Lite0 bundles: parity with the engines'
Python packages, zero copy in and out (pointer identity and the copy counter), many threads on one
Model, and the ordered, bounded Model.stream pipeline."""
import gc
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import edgesdk
from edgesdk import _native
from edgesdk.errors import BackendUnavailable, EdgeSDKError, ModelError
from edgesdk.device.preprocess import read_image
from edgesdk.device.runtime import load

ENGINES = _native.engines()

X86_NCNN = """schema = 1
name = "x86-ncnn"
engine = "ncnn"
precision = "{precision}"
arch = "x86_64"
threads = 2
[validate]
min_cosine = {cosine}
"""


def _need(engine):
    if engine not in ENGINES:
        pytest.skip(f"edgesdk._native was built without {engine} (engines: {ENGINES})")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, effnet_onnx, calib_images):
    """backend/precision -> bundle directory, packaged once for the module."""
    root = tmp_path_factory.mktemp("native-bundles")
    out = {}
    for precision, cosine in (("fp32", 0.9999), ("fp16", 0.999)):
        toml = root / f"x86-ncnn-{precision}.toml"
        toml.write_text(X86_NCNN.format(precision=precision, cosine=cosine))
        out[f"ncnn-{precision}"] = edgesdk.package(effnet_onnx, toml, root / f"ncnn-{precision}",
                                                   calib=calib_images[:4]).out
    out["openvino-fp32"] = edgesdk.package(effnet_onnx, "x86-openvino", root / "ov", calib=calib_images[:4]).out
    return out


@pytest.fixture(scope="module")
def frames(eval_images):
    return [read_image(p) for p in eval_images[:8]]


BUNDLES = ["ncnn-fp32", "ncnn-fp16", "openvino-fp32"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_native_engine_matches_python_session(bundles, frames, name):
    _need(name.split("-")[0])
    with load(bundles[name]) as native, load(bundles[name], native=False) as python:
        assert native.native is True and python.native is False
        for frame in frames:
            got, want = native(frame), python(frame)
            # same engine family, our own build of it: equal up to float summation order
            np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=2e-3)
            assert got["topk"][0]["index"] == want["topk"][0]["index"]
        assert native.check().passed  # the bundle's golden samples


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_fused_frame_path_equals_separate_steps(bundles, frames, name):
    _need(name.split("-")[0])
    with load(bundles[name]) as m:
        for frame in frames[:3]:
            fused = m(frame)["logits"]
            separate = m.infer(m.prepare(frame))["logits"]
            np.testing.assert_array_equal(fused, separate)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ncnn-fp32", "openvino-fp32"])
def test_inputs_read_in_place_outputs_over_engine_memory(bundles, frames, name):
    _need(name.split("-")[0])
    with load(bundles[name]) as m:
        s = m._session
        x = m.prepare(frames[0])["images"]
        ref = m.infer({"images": x})["logits"]
        assert s.input_pointer(0) == x.ctypes.data  # the engine read the caller's array itself
        assert s.copies() == 0

        # frames are preprocessed into the engine's own input memory, the same buffer every frame
        m(frames[1])
        own = s.input_pointer(0)
        assert own != x.ctypes.data
        out = m(frames[2])["logits"]
        assert s.input_pointer(0) == own and s.copies() == 0

        # an output is a view of engine memory (its base owns it), and stays as it was
        assert not out.flags.owndata and type(out.base).__name__ == "PyCapsule"
        kept = out.copy()
        for f in frames[3:6]:
            m(f)
        np.testing.assert_array_equal(out, kept)

        # a strided input cannot be read in place: one copy, counted, same result
        tall = np.repeat(x, 2, axis=2)[:, :, ::2]
        np.testing.assert_array_equal(m.infer({"images": tall})["logits"], ref)
        assert s.copies() == x.nbytes
    gc.collect()
    np.testing.assert_array_equal(out, kept)  # outlives the model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ncnn-fp32", "openvino-fp32"])
def test_eight_threads_match_sequential(bundles, frames, name):
    """8 Python threads calling one Model 500 times each: outputs identical to sequential calls."""
    _need(name.split("-")[0])
    with load(bundles[name], threads=1) as m:
        want = [m(f)["logits"].copy() for f in frames]
        mismatches, errors = [], []

        def worker(t):
            try:
                for k in range(500):
                    i = (k * 3 + t) % len(frames)
                    if not np.array_equal(m(frames[i])["logits"], want[i]):
                        mismatches.append((t, k, i))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors and not mismatches


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ncnn-fp32", "openvino-fp32"])
def test_stream_in_order_with_split_threads(bundles, frames, name):
    _need(name.split("-")[0])
    with load(bundles[name], threads=2) as m:
        seq = [m(f)["logits"].copy() for f in frames]
        got = [r["logits"] for r in m.stream(frames * 2, workers=2)]
        assert len(got) == 2 * len(frames)
        for k, g in enumerate(got):  # each run had one engine thread: equal up to summation order
            np.testing.assert_allclose(g, seq[k % len(frames)], rtol=0, atol=1e-4)
        assert (1, 2) in m._session._engines  # 2 threads split over 2 workers


@pytest.mark.slow
def test_stream_error_in_place_and_early_stop(bundles, frames):
    _need("ncnn")
    before = threading.active_count()
    m = load(bundles["ncnn-fp32"])
    try:
        bad = frames[0].astype(np.float32)
        it = m.stream([frames[0], frames[1], bad, frames[2]], workers=2)
        assert next(it)["logits"].shape == (1, 1000)
        assert next(it)["logits"].shape == (1, 1000)
        with pytest.raises(EdgeSDKError, match="uint8"):
            next(it)

        pulled = []

        def endless():
            k = 0
            while True:
                pulled.append(k)
                yield frames[k % len(frames)]
                k += 1

        s = m.stream(endless(), workers=2, queue=3)
        for _ in range(4):
            next(s)
        s.close()  # the consumer stops: frames not started are dropped, the ones running finish
        assert len(pulled) <= 4 + 3
        assert threading.active_count() == before + 2  # the two workers wait for the next stream
        n = len(pulled)
        assert [r["logits"].shape for r in m.stream(frames[:3], workers=2)] == [(1, 1000)] * 3
        assert len(pulled) == n and threading.active_count() == before + 2  # same workers again
    finally:
        m.close()
    assert threading.active_count() == before  # close() ends the workers


@pytest.mark.slow
def test_ncnn_int8_artifact_on_the_native_engine(tmp_path, effnet_onnx, effnet_preprocess, calib_images, frames):
    """int8 artifacts (quantized layers on ncnn's int8 kernels) run natively as the Python session runs them."""
    _need("ncnn")
    from edgesdk.backends.base import ConvertOptions
    from edgesdk.backends.ncnn.session import NcnnSession
    from edgesdk.backends.registry import get
    from edgesdk.device.preprocess import PreprocessSpec, preprocess
    from edgesdk.device.runtime import NativeSession

    spec = PreprocessSpec(**effnet_preprocess)
    calib = [{"images": preprocess(read_image(p), spec)} for p in calib_images[:8]]
    art = get("ncnn").convert(effnet_onnx, tmp_path / "int8", ConvertOptions(precision="int8", calibration=calib))
    feeds = [{"images": preprocess(f, spec)} for f in frames[:4]]
    native, python = NativeSession(art), NcnnSession(art)
    try:
        for f in feeds:
            got, want = native.run(f)["logits"], python.run(f)["logits"]
            # equal here (measured max-abs 0.0); another ISA's int8 kernels may round the float steps apart
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-2)
            assert got.argmax() == want.argmax()
        assert native.copies() == 0
    finally:
        native.close()
        python.close()
    # the weight file of another build is refused before ncnn reads it
    weights = art.path(art.meta["bin"])
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(ModelError, match="int8 build wrote"):
        NativeSession(art)


def test_native_required_and_refused(bundles, tmp_path, effnet_onnx, calib_images):
    _need("ncnn")
    with load(bundles["ncnn-fp32"], native=True) as m:
        assert m.native
    ort = edgesdk.package(effnet_onnx, "x86-onnxruntime", tmp_path / "ort", calib=calib_images[:2]).out
    with pytest.raises(BackendUnavailable, match="no native engine"):
        load(ort, native=True)
    with load(ort) as m:
        assert m.native is False


def test_bad_inputs_name_the_tensor(bundles):
    _need("ncnn")
    with load(bundles["ncnn-fp32"]) as m:
        with pytest.raises(ModelError, match=r"'images'.*\[1, 3, 224, 224\].*\[1, 3, 200, 224\]"):
            m.infer({"images": np.zeros((1, 3, 200, 224), np.float32)})
        with pytest.raises(ModelError, match="float64"):
            m.infer({"images": np.zeros((1, 3, 224, 224))})
        with pytest.raises(EdgeSDKError, match="HxWx3"):
            m(np.zeros((10, 10), np.uint8))
        m.close()
        with pytest.raises(EdgeSDKError, match="closed"):
            m.infer({"images": np.zeros((1, 3, 224, 224), np.float32)})


def test_engine_errors_map_to_edgesdk_errors(tmp_path):
    _need("ncnn")
    with pytest.raises(ModelError, match="nope.param"):
        _native.Engine.open_ncnn(param=str(tmp_path / "nope.param"), bin=str(tmp_path / "nope.bin"),
                                 inputs=[("x", "in0", 0, [1, 3, 8, 8], "float32")],
                                 outputs=[("y", "out0", 0, [1, 4], "float32")], fp16=False)


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def test_static_ncnn_symbols_stay_private():
    """Our ncnn must not interpose on (or be interposed by) the ncnn wheel in the same process."""
    _need("ncnn")
    out = subprocess.run([_tool("nm"), "-D", "--defined-only", _native.__file__], capture_output=True, text=True,
                         check=True).stdout
    exported = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert "PyInit__native" in exported
    assert not [s for s in exported if "ncnn" in s.lower()]


def test_module_does_not_need_openvino_to_load():
    """OpenVINO lives in its own library, loaded on first use: the module imports without it."""
    needed = subprocess.run([_tool("readelf"), "-d", _native.__file__], capture_output=True, text=True,
                            check=True).stdout
    assert "openvino" not in needed


def test_ncnn_bundle_runs_without_the_ncnn_python_package(bundles, frames, tmp_path):
    """On a board with the native ncnn engine, the ncnn Python package is not needed; without the
    native engine, load names the missing package."""
    _need("ncnn")
    np.save(tmp_path / "frame.npy", frames[0])
    with load(bundles["ncnn-fp32"]) as m:
        expected = m(frames[0])
    script = f"""
import sys
sys.modules["ncnn"] = None  # import ncnn now fails, as on a board without the package
import numpy as np
import edgesdk
from edgesdk.errors import BackendUnavailable
m = edgesdk.load({str(bundles["ncnn-fp32"])!r})
assert m.native
m.check()
out = m(np.load({str(tmp_path / "frame.npy")!r}))
np.save({str(tmp_path / "out.npy")!r}, out[list(out)[0]])
try:
    edgesdk.load({str(bundles["ncnn-fp32"])!r}, native=False)
except BackendUnavailable as e:
    print("refused:", e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "ncnn" in r.stdout
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_array_equal(got, expected[list(expected)[0]])
