"""ncnn backend: pnnx conversion and the ncnn session, against onnxruntime on the same ONNX file."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ncnn")
onnx = pytest.importorskip("onnx")

from edgesdk.backends import registry  # noqa: E402
from edgesdk.backends.base import Artifact, Backend, ConvertOptions, ShapeRange  # noqa: E402
from edgesdk.backends.ncnn.convert import find_pnnx  # noqa: E402
from edgesdk.backends.onnxruntime.session import reference_session  # noqa: E402
from edgesdk.errors import (  # noqa: E402
    BackendUnavailable,
    ConversionError,
    EdgeSDKError,
    ModelError,
    UnsupportedOpError,
)
from edgesdk.device.compare import compare, cosine  # noqa: E402

try:
    find_pnnx()
except BackendUnavailable as e:  # every test here converts a model first
    pytest.skip(str(e), allow_module_level=True)

# PP-OCRv4 det and rec take BGR scaled to [-1, 1] (rapidocr's DetPreProcess / resize_norm_img).
PPOCR_PREPROCESS = {"resize": "stretch", "color": "bgr", "mean": (127.5,) * 3, "std": (127.5,) * 3, "layout": "nchw"}


@pytest.fixture(scope="module")
def backend():
    return registry.get("ncnn")


@pytest.fixture(scope="module")
def text_image_bgr(text_image):
    from tools.models import read_bgr

    return read_bgr(text_image)


def timed_convert(backend, model, out, options):
    t = time.perf_counter()
    artifact = backend.convert(model, out, options)
    print(f"\nconvert {Path(model).name} -> ncnn {options.precision}: {time.perf_counter() - t:.2f} s")
    return artifact


def ppocr_input(image, w, h):
    from tools.models import to_input

    return to_input(image, {**PPOCR_PREPROCESS, "size": (w, h)})


# ------------------------------------------------------------------------------ EfficientNet-Lite0


@pytest.fixture(scope="module")
def effnet_inputs(eval_images, effnet_preprocess):
    from tools.models import to_input

    assert len(eval_images) >= 20
    return [to_input(p, effnet_preprocess) for p in eval_images]


@pytest.fixture(scope="module")
def effnet_refs(effnet_onnx, effnet_inputs):
    with reference_session(effnet_onnx) as ref:
        return [ref.run({"images": x}) for x in effnet_inputs]


@pytest.fixture(scope="module")
def effnet_fp32(backend, effnet_onnx, tmp_path_factory):
    return timed_convert(backend, effnet_onnx, tmp_path_factory.mktemp("ncnn") / "effnet32", ConvertOptions())


@pytest.fixture(scope="module")
def effnet_session(backend, effnet_fp32):
    with backend.open(effnet_fp32, threads=2) as s:
        yield s


@pytest.mark.slow
def test_effnet_fp32_parity_on_every_eval_image(effnet_session, effnet_inputs, effnet_refs):
    gots = [effnet_session.run({"images": x}) for x in effnet_inputs]
    r = compare(effnet_refs, gots, "fp32").outputs[0]
    print(f"\neffnet fp32 over {r.samples} images: cosine min {r.cosine_min:.7f}, max-abs {r.max_abs:.3g}, "
          f"top-1 agreement {r.top1_agreement}")
    assert r.cosine_min >= 0.9999
    assert r.top1_agreement == 1.0
    assert r.max_abs < 1e-3  # logits span about +-20


@pytest.mark.slow
def test_effnet_fp16_storage_parity(backend, effnet_onnx, effnet_fp32, effnet_inputs, effnet_refs, tmp_path):
    art = timed_convert(backend, effnet_onnx, tmp_path / "effnet16", ConvertOptions(precision="fp16"))
    assert art.precision == "fp16"
    # fp16 weights in the bin: about half the fp32 file
    size16, size32 = (a.path("model.bin").stat().st_size for a in (art, effnet_fp32))
    assert 0.45 < size16 / size32 < 0.55
    with backend.open(art) as s:
        gots = [s.run({"images": x}) for x in effnet_inputs]
    r = compare(effnet_refs, gots, "fp16").outputs[0]
    print(f"\neffnet fp16 over {r.samples} images: cosine min {r.cosine_min:.6f}, max-abs {r.max_abs:.3g}, "
          f"top-1 agreement {r.top1_agreement}")
    assert r.cosine_min >= 0.999
    assert r.top1_agreement == 1.0


def test_artifact_holds_only_param_bin_and_description(effnet_fp32):
    root = effnet_fp32.root
    assert sorted(p.name for p in root.iterdir()) == ["artifact.json", "model.bin", "model.param"]
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers
    again = Artifact.load(root)
    assert again.to_dict() == effnet_fp32.to_dict()
    assert [(t.name, t.shape, t.dtype) for t in again.inputs] == [("images", (1, 3, 224, 224), "float32")]
    assert [(t.name, t.shape) for t in again.outputs] == [("logits", (1, 1000))]
    assert again.meta["inputs"]["images"] == {"blob": "in0", "batch_axis": 0}
    # the fp32 build must keep fp32 weights: 4.6 M params * 4 bytes
    assert effnet_fp32.path("model.bin").stat().st_size > 4_000_000 * 4


def test_threads_share_one_session(effnet_session, effnet_inputs):
    inputs = effnet_inputs[:8]
    sequential = [effnet_session.run({"images": x})["logits"] for x in inputs]
    results, errors = {}, []

    def work(k):
        try:
            for rep in range(2):
                for j in range(len(inputs)):
                    i = (j + 2 * k) % len(inputs)  # threads start at different inputs and overlap
                    results[(k, rep, i)] = effnet_session.run({"images": inputs[i]})["logits"]
        except Exception as e:  # surfaced below; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4 * 2 * len(inputs)
    for (_, _, i), y in results.items():
        np.testing.assert_array_equal(y, sequential[i])


def test_input_buffers_and_outputs_do_not_alias(effnet_session, effnet_inputs):
    import gc

    x0, x1 = effnet_inputs[0], effnet_inputs[1]
    assert effnet_session._zero_copy == {"in0": True}  # a Conv-first model reads the caller's buffer
    base = effnet_session.run({"images": x0})["logits"]
    # A Fortran-ordered copy held only by the feeds dict makes the session build a C-contiguous
    # temporary; ncnn.Mat does not keep it alive, so the session must.
    got = effnet_session.run({"images": np.asfortranarray(x0)})["logits"]
    np.testing.assert_array_equal(got, base)
    # A strided view (every other row of a doubled image) is another non-contiguous case.
    tall = np.repeat(x0, 2, axis=2)
    np.testing.assert_array_equal(effnet_session.run({"images": tall[:, :, ::2]})["logits"], base)
    # Outputs own their memory: later runs and freed inputs do not change them.
    keep = base.copy()
    tmp = x1.copy()
    effnet_session.run({"images": tmp})
    del tmp
    gc.collect()
    _ = [np.full((1, 3, 224, 224), 7.0, np.float32) for _ in range(4)]
    np.testing.assert_array_equal(base, keep)


@pytest.mark.parametrize("feeds, needles", [
    (lambda x: {"images": x.astype(np.float64)}, ["'images'", "float32", "float64"]),
    (lambda x: {"images": x[:, :, :200]}, ["'images'", "[1, 3, 224, 224]", "[1, 3, 200, 224]"]),
    (lambda x: {"images": np.concatenate([x, x])}, ["'images'", "[2, 3, 224, 224]"]),
    (lambda x: {"image": x}, ["missing ['images']", "unknown ['image']"]),
    (lambda x: {"images": x.tolist()}, ["'images'", "numpy array"]),
])
def test_bad_feeds_name_the_tensor(effnet_session, effnet_inputs, feeds, needles):
    with pytest.raises(ModelError) as e:
        effnet_session.run(feeds(effnet_inputs[0]))
    for n in needles:
        assert n in str(e.value)


def test_closed_session_and_bad_threads(backend, effnet_fp32):
    s = backend.open(effnet_fp32)
    s.close()
    s.close()  # idempotent
    with pytest.raises(EdgeSDKError, match="closed"):
        s.run({"images": np.zeros((1, 3, 224, 224), np.float32)})
    with pytest.raises(EdgeSDKError, match="threads"):
        backend.open(effnet_fp32, threads=0)


def test_session_import_pulls_in_no_build_side():
    code = ("import sys, edgesdk.backends.ncnn.session; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxslim', 'torch', 'pnnx', 'nncf') "
            "or m.startswith(('edgesdk.build', 'edgesdk.backends.ncnn.convert', 'edgesdk.backends.ncnn.int8'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_backend_protocol(backend):
    assert isinstance(backend, Backend)
    assert backend.name == "ncnn" and backend.precisions == ("fp32", "fp16", "int8")
    assert backend.available() is None


# ------------------------------------------------------------------------------ PP-OCRv4


@pytest.mark.slow
def test_ppocr_det_dynamic_two_sizes(backend, ppocr_det_onnx, text_image_bgr, tmp_path):
    # The rapidocr file keeps its weights in Constant nodes; pnnx folds them itself (no onnxslim).
    opts = ConvertOptions(ranges={"x": ShapeRange((1, 3, 64, 64), (1, 3, 320, 320), (1, 3, 960, 960))})
    art = timed_convert(backend, ppocr_det_onnx, tmp_path / "det", opts)
    assert isinstance(art.inputs[0].shape[2], str) and isinstance(art.inputs[0].shape[3], str)
    with reference_session(ppocr_det_onnx) as ref, backend.open(art) as s:
        for h, w in ((320, 320), (480, 640)):
            x = ppocr_input(text_image_bgr, w, h)
            want = ref.run({"x": x})["sigmoid_0.tmp_0"]
            got = s.run({"x": x})["sigmoid_0.tmp_0"]
            assert got.shape == want.shape == (1, 1, h, w)
            assert want.max() > 0.99 and (want > 0.3).mean() > 0.05  # the text really fires
            c, m = cosine(want, got), float(np.abs(want - got).max())
            print(f"\ndet {h}x{w}: cosine {c:.7f}, max-abs {m:.3g}")
            assert c >= 0.999
            assert m < 1e-3


@pytest.mark.slow
def test_ppocr_rec_dynamic_two_widths(backend, ppocr_rec_onnx, ppocr_keys, text_image_bgr, tmp_path):
    def decode(probs):
        idx = probs[0].argmax(-1)
        return "".join(ppocr_keys[i] for j, i in enumerate(idx) if i and (j == 0 or i != idx[j - 1]))

    opts = ConvertOptions(ranges={"x": ShapeRange((1, 3, 48, 32), (1, 3, 48, 160), (1, 3, 48, 640))})
    art = timed_convert(backend, ppocr_rec_onnx, tmp_path / "rec", opts)
    assert art.inputs[0].shape[:3] == (1, 3, 48) and art.outputs[0].shape[2] == 6625
    title = text_image_bgr[0:36, 0:300]  # "Region-based segmentation"
    with reference_session(ppocr_rec_onnx) as ref, backend.open(art) as s:
        for w in (160, 320):
            x = ppocr_input(title, w, 48)
            want = ref.run({"x": x})["softmax_11.tmp_0"]
            got = s.run({"x": x})["softmax_11.tmp_0"]
            assert got.shape == want.shape == (1, w // 8, 6625)
            c, m = cosine(want, got), float(np.abs(want - got).max())
            print(f"\nrec width {w}: cosine {c:.7f}, max-abs {m:.3g}, text {decode(got)!r}")
            assert c >= 0.999
            assert decode(got) == decode(want)
    assert decode(want) == "Region-based segmentation"


def test_dynamic_input_without_shape_names_it(backend, ppocr_det_onnx, tmp_path):
    with pytest.raises(ConversionError) as e:
        backend.convert(ppocr_det_onnx, tmp_path / "det", ConvertOptions())
    assert "'x'" in str(e.value) and "--shape x=1x3xHxW" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_batch_above_one_is_refused(backend, ppocr_det_onnx, tmp_path):
    with pytest.raises(ConversionError, match=r"batch 1 only.*batch 2"):
        backend.convert(ppocr_det_onnx, tmp_path / "det", ConvertOptions(shapes={"x": (2, 3, 64, 64)}))
    assert list(tmp_path.iterdir()) == []


def test_fixed_shape_build(backend, ppocr_rec_onnx, tmp_path):
    art = backend.convert(ppocr_rec_onnx, tmp_path / "rec", ConvertOptions(shapes={"x": (1, 3, 48, 320)}))
    assert art.inputs[0].shape == (1, 3, 48, 320) and art.outputs[0].shape == (1, 40, 6625)
    with backend.open(art) as s, pytest.raises(ModelError, match=r"\[1, 3, 48, 160\]"):
        s.run({"x": np.zeros((1, 3, 48, 160), np.float32)})


# ------------------------------------------------------------------------------ refusals


def test_sklearn_onnx_ml_ops_are_refused(backend, sklearn_onnx, tmp_path):
    with pytest.raises(UnsupportedOpError) as e:
        backend.convert(sklearn_onnx, tmp_path / "iris", ConvertOptions())
    assert e.value.backend == "ncnn"
    named = " ".join(e.value.ops)
    for op in ("LinearClassifier", "ZipMap"):
        assert op in named and op in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_srcnn_factor_input_is_refused(backend, srcnn_onnx, tmp_path):
    # Its Resize reads the scales from the `factor` input: pnnx would crash folding it and ncnn's
    # Interp takes scales as constants. A clear refusal, not a crash or a wrong-sized output.
    with pytest.raises(UnsupportedOpError) as e:
        backend.convert(srcnn_onnx, tmp_path / "sr", ConvertOptions(shapes={"input": (1, 3, 32, 40)}))
    assert e.value.ops == ["Resize"] and "'factor'" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_layers_pnnx_cannot_lower_are_refused(backend, tmp_path):
    # Scales computed from an input through a Concat escape the direct-input check; pnnx then
    # leaves an F.interpolate in the param, which ncnn has no layer for.
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(2, np.float32), "ones")]
    nodes = [helper.make_node("Concat", ["ones", "factor", "factor"], ["scales"], axis=0),
             helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="linear"),
             helper.make_node("Conv", ["up", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16]),
                                            helper.make_tensor_value_info("factor", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "H", "W"])], inits)
    path = tmp_path / "up.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    with pytest.raises(UnsupportedOpError) as e:
        backend.convert(path, tmp_path / "out", ConvertOptions())
    assert e.value.ops == ["F.interpolate"]
    assert not (tmp_path / "out").exists()


def test_engine_options(backend, linear_relu_onnx, tmp_path):
    art = backend.convert(linear_relu_onnx, tmp_path / "a", ConvertOptions(precision="fp16", engine={"fp16_arithmetic": True}))
    assert art.meta["fp16_arithmetic"] is True
    x = np.linspace(-2, 2, 13, dtype=np.float32).reshape(1, 13)
    with reference_session(linear_relu_onnx) as ref, backend.open(art) as s:
        np.testing.assert_allclose(s.run({"input": x})["output"], ref.run({"input": x})["output"], rtol=1e-2, atol=1e-2)
    for engine, precision, needle in (({"threads": 4}, "fp16", "unknown engine option"),
                                      ({"fp16_arithmetic": "yes"}, "fp16", "must be bool"),
                                      ({"fp16_arithmetic": True}, "fp32", "needs precision fp16")):
        with pytest.raises(ConversionError, match=needle):
            backend.convert(linear_relu_onnx, tmp_path / "b", ConvertOptions(precision=precision, engine=engine))
    assert not (tmp_path / "b").exists()


def test_int8_and_missing_model(backend, effnet_onnx, tmp_path):
    with pytest.raises(ConversionError, match="int8"):
        backend.convert(effnet_onnx, tmp_path / "x", ConvertOptions(precision="int8"))
    with pytest.raises(ModelError, match="nope.onnx"):
        backend.convert(tmp_path / "nope.onnx", tmp_path / "x", ConvertOptions())
    with pytest.raises(ModelError, match=r"unknown input\(s\) \['image'\]"):
        backend.convert(effnet_onnx, tmp_path / "x", ConvertOptions(shapes={"image": (1, 3, 224, 224)}))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ name mapping


@pytest.fixture(scope="module")
def two_in_two_out(tmp_path_factory):
    """Inputs listed opposite to the order the graph uses them, outputs in yet another order,
    a rank-2 input/output that keeps its leading dim and a 4-D pair whose batch axis pnnx drops."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(5, 6)

        def forward(self, vec, img):
            feat = torch.relu(self.conv(img))
            return feat, self.fc(vec), feat.mean(dim=(2, 3))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("two") / "two.onnx"
    from tools.models import _torch_export

    _torch_export(Net().eval(), (torch.zeros(1, 5), torch.zeros(1, 3, 8, 8)), str(path), opset_version=13,
                  input_names=["vec", "img"], output_names=["feat", "fc", "pooled"])
    return path


def test_two_inputs_outputs_map_by_onnx_name(backend, two_in_two_out, tmp_path):
    art = backend.convert(two_in_two_out, tmp_path / "two", ConvertOptions())
    assert [t.name for t in art.inputs] == ["vec", "img"]
    assert [t.name for t in art.outputs] == ["feat", "fc", "pooled"]
    assert art.meta["inputs"] == {"vec": {"blob": "in0", "batch_axis": None}, "img": {"blob": "in1", "batch_axis": 0}}
    rng = np.random.default_rng(1)
    feeds = {"img": rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
             "vec": rng.standard_normal((1, 5)).astype(np.float32)}
    with reference_session(two_in_two_out) as ref, backend.open(art) as s:
        want, got = ref.run(feeds), s.run(feeds)
    assert list(got) == ["feat", "fc", "pooled"]
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_batch_axis_moved_by_transpose(backend, tmp_path):
    # pnnx tracks the batch axis through the graph: after Transpose(perm=[2,0,1,3]) it sits at
    # axis 1 of the output, and the session must put the 1 back there, not at axis 0.
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 80], np.int64), "flat")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["moved"], perm=[2, 0, 1, 3]),
             helper.make_node("Reshape", ["c", "flat"], ["flat_out"])]
    graph = helper.make_graph(nodes, "moved", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 5])],
                              [helper.make_tensor_value_info("moved", TensorProto.FLOAT, [4, 1, 4, 5]),
                               helper.make_tensor_value_info("flat_out", TensorProto.FLOAT, [1, 80])], inits)
    model = tmp_path / "moved.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(model))
    art = backend.convert(model, tmp_path / "art", ConvertOptions())
    assert art.meta["outputs"]["moved"]["batch_axis"] == 1
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    with reference_session(model) as ref, backend.open(art) as s:
        want, got = ref.run({"x": x}), s.run({"x": x})
    for name in ("moved", "flat_out"):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_in_place_first_layers_get_a_copy(backend, tmp_path):
    # x feeds a Conv and, through ncnn's Split, an in-place ReLU. Wrapping x zero-copy would make
    # ncnn dereference the wrapped Mat's missing refcount (a segfault) and overwrite the caller's
    # array, so the session copies such inputs. Run in a child process so a crash is a failure here.
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Mul", ["r", "two"], ["scaled"])]
    graph = helper.make_graph(nodes, "inplace", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 4, 8, 8]),
                               helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    model = tmp_path / "inplace.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(model))
    art = backend.convert(model, tmp_path / "art", ConvertOptions())
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with reference_session(model) as ref:
        want = ref.run({"x": x})
    np.savez(tmp_path / "io.npz", x=x, **want)
    child = (
        "import sys, numpy as np\n"
        "from edgesdk.backends.base import Artifact\n"
        "from edgesdk.backends.ncnn.session import NcnnSession\n"
        "io = np.load(sys.argv[2]); x = io['x'].copy()\n"
        "with NcnnSession(Artifact.load(sys.argv[1])) as s:\n"
        "    got = [s.run({'x': x}) for _ in range(3)]\n"
        "assert np.array_equal(x, io['x']), 'the caller\\'s input was modified'\n"
        "for g in got:\n"
        "    for k in ('conv', 'scaled'):\n"
        "        np.testing.assert_allclose(g[k], io[k], rtol=1e-4, atol=1e-5, err_msg=k)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", child, str(art.root), str(tmp_path / "io.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", f"exit {r.returncode}: {r.stdout}{r.stderr}"


def test_linear_relu(backend, linear_relu_onnx, tmp_path):
    art = backend.convert(linear_relu_onnx, tmp_path / "lr", ConvertOptions())
    x = np.linspace(-2, 2, 13, dtype=np.float32).reshape(1, 13)
    with reference_session(linear_relu_onnx) as ref, backend.open(art) as s:
        want, got = ref.run({"input": x})["output"], s.run({"input": x})["output"]
    assert got.shape == (1, 1) and want[0, 0] > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reconvert_replaces_previous_artifact(backend, linear_relu_onnx, tmp_path):
    out = tmp_path / "lr"
    backend.convert(linear_relu_onnx, out, ConvertOptions())
    art = backend.convert(linear_relu_onnx, out, ConvertOptions(precision="fp16"))
    assert Artifact.load(out).precision == "fp16" == art.precision
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr"]
