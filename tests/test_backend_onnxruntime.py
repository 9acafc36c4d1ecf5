"""The ONNX Runtime backend: artifact = the ONNX file, the session that is also the parity reference."""
import subprocess
import sys
import threading

import numpy as np
import pytest

from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, ConvertOptions
from edgesdk.backends.onnxruntime import OnnxRuntimeBackend
from edgesdk.backends.onnxruntime.session import OnnxRuntimeSession, reference_session
from edgesdk.errors import ConversionError, EdgeSDKError, ModelError
from edgesdk.build.optimize import optimize


@pytest.fixture(scope="module")
def effnet_artifact(effnet_onnx, tmp_path_factory):
    return OnnxRuntimeBackend().convert(effnet_onnx, tmp_path_factory.mktemp("ort") / "effnet", ConvertOptions())


@pytest.fixture(scope="module")
def effnet_feeds(eval_images, effnet_preprocess):
    from tools.models import to_input

    return [{"images": to_input(p, effnet_preprocess)} for p in eval_images[:8]]


def test_registry_gives_this_backend():
    backend = registry.get("onnxruntime")
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.available() is None


def test_artifact_files_and_io(effnet_artifact):
    a = effnet_artifact
    assert sorted(p.name for p in a.root.iterdir()) == ["artifact.json", "model.onnx"]
    assert a.files == ["model.onnx"] and a.precision == "fp32"
    assert [t.to_dict() for t in a.inputs] == [{"name": "images", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert [t.to_dict() for t in a.outputs] == [{"name": "logits", "shape": [1, 1000], "dtype": "float32"}]
    again = Artifact.load(a.root)
    assert again.to_dict() == a.to_dict()


def test_session_matches_reference_exactly(effnet_onnx, effnet_artifact, effnet_feeds):
    ref = reference_session(effnet_onnx)
    with OnnxRuntimeBackend().open(effnet_artifact, threads=1) as sess:
        for feeds in effnet_feeds:
            r, g = ref.run(feeds)["logits"], sess.run(feeds)["logits"]
            np.testing.assert_array_equal(g, r)
    # A real classifier on real photos: confident somewhere, not a constant output.
    tops = {int(ref.run(f)["logits"].argmax()) for f in effnet_feeds}
    assert len(tops) > 3


def test_convert_with_fixed_shape(ppocr_det_onnx, tmp_path):
    a = OnnxRuntimeBackend().convert(ppocr_det_onnx, tmp_path / "det", ConvertOptions(shapes={"x": (1, 3, 320, 320)}))
    assert a.inputs[0].shape == (1, 3, 320, 320)
    assert a.outputs[0].shape == (1, 1, 320, 320)
    with OnnxRuntimeSession(a.root) as sess:  # reopened from the directory alone
        with pytest.raises(ModelError, match=r"expected shape \[1, 3, 320, 320\], got \[1, 3, 480, 640\]"):
            sess.run({"x": np.zeros((1, 3, 480, 640), np.float32)})


def test_shapes_already_fixed_copy_as_is(effnet_onnx, tmp_path):
    a = OnnxRuntimeBackend().convert(effnet_onnx, tmp_path / "e", ConvertOptions(shapes={"images": (1, 3, 224, 224)}))
    assert a.path("model.onnx").read_bytes() == effnet_onnx.read_bytes()
    with pytest.raises(ModelError, match="fixed at"):
        OnnxRuntimeBackend().convert(effnet_onnx, tmp_path / "f", ConvertOptions(shapes={"images": (1, 3, 320, 320)}))


def test_output_shape_inferred_when_undeclared(two_transpose_onnx, tmp_path):
    a = OnnxRuntimeBackend().convert(two_transpose_onnx, tmp_path / "t", ConvertOptions())
    assert [t.to_dict() for t in a.outputs] == [{"name": "Y", "shape": [1, 5, 4, 3], "dtype": "float32"}]
    x = np.arange(60, dtype=np.float32).reshape(1, 3, 4, 5)
    np.testing.assert_array_equal(OnnxRuntimeSession(a).run({"X": x})["Y"], x.transpose(0, 3, 2, 1))


def test_dynamic_model_keeps_dim_names(ppocr_rec_onnx, tmp_path):
    a = OnnxRuntimeBackend().convert(ppocr_rec_onnx, tmp_path / "rec", ConvertOptions())
    (x,) = a.inputs
    assert x.shape[1:3] == (3, 48) and isinstance(x.shape[0], str) and isinstance(x.shape[3], str)
    sess = OnnxRuntimeSession(a)
    for w in (160, 320):
        out = sess.run({"x": np.zeros((1, 3, 48, w), np.float32)})["softmax_11.tmp_0"]
        assert out.shape == (1, w // 8, 6625)


@pytest.mark.parametrize("precision, match", [("fp64", "precision 'fp64' is not supported"),
                                              ("int8", "int8 needs calibration feeds")])
def test_unusable_precisions_refused(effnet_onnx, tmp_path, precision, match):
    with pytest.raises(ConversionError, match=match):
        OnnxRuntimeBackend().convert(effnet_onnx, tmp_path / "x", ConvertOptions(precision=precision))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("feeds, needles", [
    ({"images": np.zeros((1, 3, 224, 224), np.float64)}, ["'images'", "expected dtype float32, got float64"]),
    ({"images": np.zeros((3, 224, 224), np.float32)},
     ["'images'", "expected shape [1, 3, 224, 224], got [3, 224, 224]"]),
    ({"images": np.zeros((1, 3, 224, 225), np.float32)}, ["got [1, 3, 224, 225]"]),
    ({"input": np.zeros((1, 3, 224, 224), np.float32)}, ["missing ['images']", "unknown ['input']"]),
    ({"images": [[0.0]]}, ["expected a numpy array, got list"]),
    ([np.zeros((1, 3, 224, 224), np.float32)], ["feeds must be a dict"]),
])
def test_bad_feeds_name_the_tensor(effnet_artifact, feeds, needles):
    sess = OnnxRuntimeSession(effnet_artifact)
    with pytest.raises(ModelError) as e:
        sess.run(feeds)
    for n in needles:
        assert n in str(e.value)


def test_engine_failure_becomes_model_error(ppocr_det_onnx):
    # A 7x7 image passes the declared [?, 3, ?, ?] check but breaks the network's stride-32 upsampling.
    sess = reference_session(ppocr_det_onnx)
    with pytest.raises(ModelError, match="onnxruntime failed to run"):
        sess.run({"x": np.zeros((1, 3, 7, 7), np.float32)})


def test_open_errors_and_close(effnet_artifact, tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        OnnxRuntimeSession(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        OnnxRuntimeSession(junk)
    with pytest.raises(EdgeSDKError, match="threads must be a positive integer"):
        OnnxRuntimeSession(effnet_artifact, threads=0)
    sess = OnnxRuntimeSession(effnet_artifact)
    sess.close()
    with pytest.raises(EdgeSDKError, match="closed"):
        sess.run({"images": np.zeros((1, 3, 224, 224), np.float32)})


def test_threads_share_one_session(effnet_artifact, effnet_feeds):
    sess = OnnxRuntimeSession(effnet_artifact, threads=1)
    expected = [sess.run(f)["logits"] for f in effnet_feeds]
    results: dict = {}

    def work(k):
        results[k] = [sess.run(f)["logits"] for f in effnet_feeds]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for got, want in zip(results[k], expected):
            np.testing.assert_array_equal(got, want)


def test_session_imports_no_build_side(effnet_artifact):
    code = (
        "import sys, numpy as np\n"
        "from edgesdk.backends.onnxruntime.session import OnnxRuntimeSession\n"
        f"s = OnnxRuntimeSession({str(effnet_artifact.root)!r})\n"
        "s.run({'images': np.zeros((1, 3, 224, 224), np.float32)})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxslim', 'torch', 'nncf')\n"
        "       or m.startswith(('edgesdk.build', 'onnxruntime.quantization', 'edgesdk.backends.onnxruntime.convert'))]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_optimized_then_converted_is_exact(ppocr_det_onnx, tmp_path):
    # The pipeline's order: optimize, then convert; the artifact runs exactly as the optimized file.
    opt = optimize(ppocr_det_onnx, tmp_path / "det.onnx").path
    a = OnnxRuntimeBackend().convert(opt, tmp_path / "art", ConvertOptions())
    x = np.random.default_rng(1).uniform(-2, 2, (1, 3, 256, 192)).astype(np.float32)
    np.testing.assert_array_equal(OnnxRuntimeSession(a).run({"x": x})["sigmoid_0.tmp_0"],
                                  reference_session(opt).run({"x": x})["sigmoid_0.tmp_0"])
