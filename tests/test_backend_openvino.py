"""The OpenVINO backend on real models, with onnxruntime on the same ONNX as ground truth."""
import platform
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, ConvertOptions, ShapeRange
from edgesdk.backends.onnxruntime import OnnxRuntimeBackend
from edgesdk.backends.onnxruntime.session import reference_session
from edgesdk.backends.openvino import OpenVINOBackend
from edgesdk.backends.openvino.session import OpenVINOSession
from edgesdk.errors import (
    BackendUnavailable, BundleError, ConversionError, EdgeSDKError, ModelError, UnsupportedOpError,
)
from edgesdk.build.optimize import optimize
from edgesdk.device.compare import compare, cosine

ov = pytest.importorskip("openvino")

DET_OUT, REC_OUT = "sigmoid_0.tmp_0", "softmax_11.tmp_0"


def convert(model, out, **options):
    return OpenVINOBackend().convert(model, out, ConvertOptions(**options))


def det_input(image, h: int, w: int) -> np.ndarray:
    """The image stretched to HxW, ImageNet mean/std on [0, 1] as PP-OCR det expects, NCHW."""
    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    x = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    x = (x - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def rec_input(crop: np.ndarray, w: int) -> np.ndarray:
    """A text line at height 48 and width w, scaled to [-1, 1], NCHW."""
    x = cv2.resize(crop, (w, 48), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def ctc_text(probs: np.ndarray, keys: list[str]) -> str:
    idx = probs.argmax(-1)
    return "".join(keys[i] for j, i in enumerate(idx) if i != 0 and (j == 0 or idx[j - 1] != i))


@pytest.fixture(scope="module")
def effnet_feeds(eval_images, effnet_preprocess):
    from tools.models import to_input

    return [{"images": to_input(p, effnet_preprocess)} for p in eval_images]


@pytest.fixture(scope="module")
def effnet_ref(effnet_onnx, effnet_feeds):
    sess = reference_session(effnet_onnx)
    return [sess.run(f) for f in effnet_feeds]


@pytest.fixture(scope="module")
def effnet_ov(effnet_onnx, tmp_path_factory):
    return convert(effnet_onnx, tmp_path_factory.mktemp("ov") / "effnet32")


@pytest.fixture(scope="module")
def det_ov(ppocr_det_onnx, tmp_path_factory):
    d = tmp_path_factory.mktemp("det")
    opt = optimize(ppocr_det_onnx, d / "det.onnx").path
    return opt, convert(opt, d / "ov")


def report(what: str, rep) -> None:
    print(f"\n{what}: cosine_min {rep.cosine_min:.7f}  max_abs {rep.max_abs:.3g}  top1 {rep.top1_agreement}")


# ---------------------------------------------------------------------------- conversion


def test_registry_and_names_kept(effnet_ov):
    assert isinstance(registry.get("openvino"), OpenVINOBackend)
    a = Artifact.load(effnet_ov.root)
    assert sorted(p.name for p in a.root.iterdir()) == ["artifact.json", "model.bin", "model.xml"]
    assert [t.to_dict() for t in a.inputs] == [{"name": "images", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert [t.to_dict() for t in a.outputs] == [{"name": "logits", "shape": [1, 1000], "dtype": "float32"}]
    # convert_model keeps the ONNX names as IR tensor names: no mapping needed.
    assert a.meta["tensor_names"] == {}
    ir = ov.Core().read_model(str(a.path("model.xml")))
    assert ir.input(0).get_names() >= {"images"} and ir.output(0).get_names() >= {"logits"}


def test_effnet_fp32_parity(effnet_ov, effnet_feeds, effnet_ref):
    sess = OpenVINOSession(effnet_ov)
    t0 = time.perf_counter()
    got = [sess.run(f) for f in effnet_feeds]
    ms = (time.perf_counter() - t0) * 1000 / len(effnet_feeds)
    rep = compare(effnet_ref, got, "fp32")
    report(f"effnet openvino fp32 on {len(effnet_feeds)} eval images ({ms:.1f} ms/image)", rep)
    assert len(effnet_feeds) >= 20
    assert rep.cosine_min >= 0.9999
    assert rep.top1_agreement == 1.0


def test_effnet_fp16_parity(effnet_onnx, effnet_ov, effnet_feeds, effnet_ref, tmp_path):
    a16 = convert(effnet_onnx, tmp_path / "effnet16", precision="fp16")
    assert a16.precision == "fp16"
    # fp16 weights: the .bin is about half the fp32 one.
    ratio = a16.path("model.bin").stat().st_size / effnet_ov.path("model.bin").stat().st_size
    assert 0.45 < ratio < 0.6
    got = [OpenVINOSession(a16).run(f) for f in effnet_feeds[:1]] + \
        OpenVINOSession(a16).run_async_many(effnet_feeds[1:])
    rep = compare(effnet_ref, got, "fp16")
    report("effnet openvino fp16 IR", rep)
    assert rep.cosine_min >= 0.999
    assert rep.top1_agreement == 1.0


def test_ppocr_det_dynamic_two_sizes(det_ov, text_image):
    opt, art = det_ov
    assert isinstance(art.inputs[0].shape[2], str) and isinstance(art.inputs[0].shape[3], str)
    ref, sess = reference_session(opt), OpenVINOSession(art)
    for h, w in ((320, 320), (480, 640)):
        feeds = {"x": det_input(text_image, h, w)}
        r, g = ref.run(feeds)[DET_OUT], sess.run(feeds)[DET_OUT]
        assert g.shape == r.shape == (1, 1, h, w)
        assert (r > 0.3).mean() > 0.05  # the page's text lines really fire
        diff = float(np.abs(g - r).max())
        print(f"\nppocr det {h}x{w}: cosine {cosine(r, g):.7f}  max_abs {diff:.3g}")
        assert cosine(r, g) >= 0.999
        assert diff < 1e-3


def test_ppocr_rec_dynamic_two_widths(ppocr_rec_onnx, ppocr_keys, text_image, tmp_path):
    opt = optimize(ppocr_rec_onnx, tmp_path / "rec.onnx").path
    art = convert(opt, tmp_path / "ov")
    assert art.inputs[0].shape[1:3] == (3, 48) and isinstance(art.inputs[0].shape[3], str)
    ref, sess = reference_session(opt), OpenVINOSession(art)
    title = cv2.imread(str(text_image), cv2.IMREAD_COLOR)[0:36]  # the page's heading
    for w, crop, text in ((160, title[:, :150], "Region-based"), (320, title, "Region-based segmentation")):
        feeds = {"x": rec_input(crop, w)}
        r, g = ref.run(feeds)[REC_OUT], sess.run(feeds)[REC_OUT]
        assert g.shape == r.shape == (1, w // 8, 6625)
        diff = float(np.abs(g - r).max())
        print(f"\nppocr rec width {w}: cosine {cosine(r, g):.7f}  max_abs {diff:.3g}")
        assert cosine(r, g) >= 0.999
        assert ctc_text(r[0], ppocr_keys) == ctc_text(g[0], ppocr_keys) == text


def test_fixed_shape_and_bounded_range(ppocr_det_onnx, text_image, tmp_path):
    fixed = convert(ppocr_det_onnx, tmp_path / "fixed", shapes={"x": (1, 3, 320, 320)})
    assert fixed.inputs[0].shape == (1, 3, 320, 320) and fixed.outputs[0].shape == (1, 1, 320, 320)
    feeds = {"x": det_input(text_image, 320, 320)}
    r = reference_session(ppocr_det_onnx).run(feeds)[DET_OUT]
    assert cosine(r, OpenVINOSession(fixed).run(feeds)[DET_OUT]) >= 0.999
    with pytest.raises(ModelError, match=r"expected shape \[1, 3, 320, 320\], got \[1, 3, 480, 640\]"):
        OpenVINOSession(fixed).run({"x": det_input(text_image, 480, 640)})

    rng = ShapeRange(min=(1, 3, 32, 32), opt=(1, 3, 320, 320), max=(1, 3, 640, 640))
    bounded = convert(ppocr_det_onnx, tmp_path / "bounded", ranges={"x": rng})
    assert bounded.inputs[0].shape[:2] == (1, 3) and isinstance(bounded.inputs[0].shape[2], str)
    sess = OpenVINOSession(bounded)
    assert cosine(r, sess.run(feeds)[DET_OUT]) >= 0.999
    with pytest.raises(ModelError, match="OpenVINO failed to run"):
        sess.run({"x": det_input(text_image, 960, 960)})  # beyond the declared max


@pytest.mark.parametrize("options, error, needles", [
    ({"shapes": {"images": (1, 3, 320, 320)}}, ModelError, ["no input named 'images'", "['x']"]),
    ({"shapes": {"x": (1, 3, 320)}}, ModelError, ["rank 4", "[1, 3, 320]"]),
    ({"shapes": {"x": (1, 1, 320, 320)}}, ModelError, ["fixed at", "[1, 1, 320, 320]"]),
    ({"ranges": {"x": ShapeRange((1, 3, 32), (1, 3, 64), (1, 3, 96))}}, ModelError, ["rank 4", "min [1, 3, 32]"]),
    ({"precision": "int8"}, ConversionError, ["int8 needs calibration feeds"]),
    ({"precision": "fp8"}, ConversionError, ["precision 'fp8' is not supported"]),
])
def test_convert_errors(ppocr_det_onnx, tmp_path, options, error, needles):
    with pytest.raises(error) as e:
        convert(ppocr_det_onnx, tmp_path / "out", **options)
    for n in needles:
        assert n in str(e.value)
    assert list(tmp_path.iterdir()) == []


def maxunpool_model(path):
    """SegNet's decoder step: MaxPool with indices, then MaxUnpool. Valid ONNX that onnxruntime runs;
    OpenVINO's ONNX frontend has no MaxUnpool."""
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("MaxUnpool", ["pooled", "indices"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        "segnet_unpool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what onnxruntime 1.18+ reads
    onnx.save(model, str(path))
    return path


def test_unsupported_op_is_named(tmp_path):
    model = maxunpool_model(tmp_path / "unpool.onnx")
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    y = reference_session(model).run({"x": x})["y"]
    assert np.count_nonzero(y) == 64  # a real model: one max per 2x2 window survives
    with pytest.raises(UnsupportedOpError) as e:
        convert(model, tmp_path / "out")
    assert e.value.backend == "openvino" and e.value.ops == ["MaxUnpool"]
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unpool.onnx"]  # no temp dir left behind


def test_sklearn_onnx_ml_refused_with_op_names(sklearn_onnx, tmp_path):
    with pytest.raises(UnsupportedOpError) as e:
        convert(sklearn_onnx, tmp_path / "out")
    assert e.value.backend == "openvino"
    assert e.value.ops and all(op.startswith("ai.onnx.ml.") for op in e.value.ops)
    assert set(e.value.ops) <= {"ai.onnx.ml.ZipMap", "ai.onnx.ml.LinearClassifier", "ai.onnx.ml.Normalizer"}
    assert "openvino does not support: ai.onnx.ml." in str(e.value)


def test_output_shape_from_openvino_when_undeclared(two_transpose_onnx, tmp_path):
    a = convert(two_transpose_onnx, tmp_path / "t")
    assert [t.to_dict() for t in a.outputs] == [{"name": "Y", "shape": [1, 5, 4, 3], "dtype": "float32"}]
    x = np.arange(60, dtype=np.float32).reshape(1, 3, 4, 5)
    np.testing.assert_array_equal(OpenVINOSession(a).run({"X": x})["Y"], x.transpose(0, 3, 2, 1))


def test_srcnn_factor_input(srcnn_onnx, tmp_path):
    # The scale factor is a graph input: the output size depends on a value, not a shape.
    art = convert(srcnn_onnx, tmp_path / "ov")
    ref, sess = reference_session(srcnn_onnx), OpenVINOSession(art)
    rng = np.random.default_rng(2)
    for shape, scales in (((1, 3, 32, 40), [1, 1, 3, 3]), ((1, 3, 20, 24), [1, 1, 2, 2])):
        feeds = {"input": rng.random(shape, np.float32), "factor": np.array(scales, np.float32)}
        r, g = ref.run(feeds)["output"], sess.run(feeds)["output"]
        assert g.shape == r.shape == (1, 3, shape[2] * scales[2], shape[3] * scales[3])
        diff = float(np.abs(g - r).max())
        print(f"\nsrcnn x{scales[2]}: cosine {cosine(r, g):.7f}  max_abs {diff:.3g}")
        assert cosine(r, g) >= 0.9999 and diff < 1e-4


# ---------------------------------------------------------------------------- session


def test_inputs_are_zero_copy(effnet_ov, effnet_feeds, effnet_ref):
    sess = OpenVINOSession(effnet_ov)
    x = effnet_feeds[0]["images"]
    out = sess.run({"images": x})
    bound = sess._request().get_input_tensor(0).data
    assert np.shares_memory(bound, x)  # OpenVINO read the caller's buffer, no copy
    np.testing.assert_array_equal(out["logits"], sess.run({"images": x})["logits"])
    # A non-contiguous view is the one case that is copied (OpenVINO needs C order); results agree.
    wide = np.zeros((1, 3, 224, 448), np.float32)
    wide[..., ::2] = x
    view = wide[..., ::2]
    got = sess.run({"images": view})["logits"]
    assert not np.shares_memory(sess._request().get_input_tensor(0).data, wide)
    np.testing.assert_array_equal(got, out["logits"])
    # Outputs are copies: a later run does not overwrite what an earlier one returned.
    kept = out["logits"].copy()
    sess.run(effnet_feeds[1])
    np.testing.assert_array_equal(out["logits"], kept)


def test_four_threads_match_sequential(effnet_ov, effnet_feeds):
    sess = OpenVINOSession(effnet_ov, threads=1)
    feeds = effnet_feeds[:12]
    t0 = time.perf_counter()
    expected = [sess.run(f)["logits"] for f in feeds]
    seq_s = time.perf_counter() - t0
    results: dict = {}
    errors: list = []

    def work(k):
        try:
            order = feeds[k:] + feeds[:k]  # each thread starts elsewhere, so runs interleave
            results[k] = [sess.run(f)["logits"] for f in order]
        except Exception as e:  # surfaced below: an exception in a thread would otherwise be lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    par_s = time.perf_counter() - t0
    assert not errors, errors
    assert len(sess._requests) == 5  # the main thread's request + one per worker
    for k in range(4):
        for j, got in enumerate(results[k]):
            np.testing.assert_array_equal(got, expected[(j + k) % len(feeds)])
    print(f"\nopenvino effnet: {len(feeds)} runs sequential {seq_s:.3f} s; 4 threads x {len(feeds)} runs {par_s:.3f} s")


@pytest.mark.parametrize("hint, jobs", [("THROUGHPUT", 0), ("LATENCY", 3), ("LATENCY", 50)])
def test_run_async_many_in_order(effnet_ov, effnet_feeds, hint, jobs):
    sess = OpenVINOSession(effnet_ov, hint=hint)
    feeds = effnet_feeds[:10]
    expected = [sess.run(f)["logits"] for f in feeds]
    got = sess.run_async_many(feeds, jobs=jobs)  # 3 jobs: each request is reused for later feeds
    assert len(got) == len(feeds)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g["logits"], e)
    assert sess.run_async_many([]) == []
    with pytest.raises(ModelError, match="'images'.*float64"):
        sess.run_async_many([feeds[0], {"images": feeds[1]["images"].astype(np.float64)}])


def test_run_async_many_survives_session_churn(effnet_ov, effnet_feeds):
    # Sessions created, used asynchronously and dropped at once: this deadlocked with an
    # AsyncInferQueue Python callback (the compiled model's destructor joined a worker waiting for the GIL).
    feeds = effnet_feeds[:3]
    for _ in range(30):
        out = OpenVINOSession(effnet_ov, hint="THROUGHPUT").run_async_many(feeds)
        assert all(o is not None for o in out)


def f16_hint_reads_back():
    """What OpenVINO's CPU plugin makes of an f16 precision hint on this CPU (read from its flags):
    f16 where it computes f16 (AVX512-FP16, or AVX2-VNNI-2 = AVX-VNNI-INT8 + AVX-NE-CONVERT), else
    bf16 where it has bf16 (AVX512-BF16, AMX-BF16), else the hint stays f16 and runs in f32."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ov.Type.f16
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if "avx512_fp16" in flags or {"avx_vnni_int8", "avx_ne_convert"} <= flags:
        return ov.Type.f16
    if flags & {"avx512_bf16", "amx_bf16"}:
        return ov.Type.bf16
    return ov.Type.f16


def test_compile_properties(effnet_ov, effnet_onnx, tmp_path):
    c = OpenVINOSession(effnet_ov, threads=1)._compiled
    assert str(c.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert int(c.get_property("INFERENCE_NUM_THREADS")) == 1
    assert c.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    a16 = convert(effnet_onnx, tmp_path / "e16", precision="fp16")
    # fp16 weights compute in f16 on ARM, in f32 on x86 (where OpenVINO's f16 is slower than f32)
    want = ov.Type.f16 if platform.machine().lower() in ("aarch64", "arm64") else ov.Type.f32
    assert OpenVINOSession(a16)._compiled.get_property("INFERENCE_PRECISION_HINT") == want
    # a profile's [engine_options] travel in the artifact to the session
    opts = ConvertOptions(precision="fp16", engine={"inference_precision": "f16", "hint": "THROUGHPUT"})
    a16 = OpenVINOBackend().convert(effnet_onnx, tmp_path / "e16o", opts)
    c16 = OpenVINOSession(a16)._compiled
    assert c16.get_property("INFERENCE_PRECISION_HINT") == f16_hint_reads_back()
    assert str(c16.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    with pytest.raises(ConversionError, match="unknown engine option"):
        OpenVINOBackend().convert(effnet_onnx, tmp_path / "bad", ConvertOptions(engine={"turbo": True}))
    c = OpenVINOSession(effnet_ov, inference_precision="bf16")._compiled
    assert c.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    with pytest.raises(EdgeSDKError, match="inference_precision must be"):
        OpenVINOSession(effnet_ov, inference_precision="int4")


def test_session_errors(effnet_ov, tmp_path, effnet_onnx):
    with pytest.raises(EdgeSDKError, match="performance hint 'FAST'"):
        OpenVINOSession(effnet_ov, hint="FAST")
    with pytest.raises(BackendUnavailable, match="device 'NPU9'"):
        OpenVINOSession(effnet_ov, device="NPU9")
    with pytest.raises(EdgeSDKError, match="threads"):
        OpenVINOSession(effnet_ov, threads=-2)
    ort_art = OnnxRuntimeBackend().convert(effnet_onnx, tmp_path / "ort", ConvertOptions())
    with pytest.raises(BundleError, match="not openvino"):
        OpenVINOSession(ort_art)
    with pytest.raises(BundleError, match="no artifact description"):
        OpenVINOSession(tmp_path)
    sess = OpenVINOSession(effnet_ov.root)
    with pytest.raises(ModelError, match="missing \\['images'\\], unknown \\['x'\\]"):
        sess.run({"x": np.zeros((1, 3, 224, 224), np.float32)})
    with sess:
        pass
    with pytest.raises(EdgeSDKError, match="closed"):
        sess.run({"images": np.zeros((1, 3, 224, 224), np.float32)})


def test_session_imports_no_build_side(effnet_ov):
    code = (
        "import sys, numpy as np\n"
        "from edgesdk.backends.openvino.session import OpenVINOSession\n"
        f"s = OpenVINOSession({str(effnet_ov.root)!r})\n"
        "s.run({'images': np.zeros((1, 3, 224, 224), np.float32)})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'onnxslim', 'torch', 'nncf')\n"
        "       or m.startswith(('edgesdk.build', 'edgesdk.backends.openvino.convert'))]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
