"""ncnn int8 written by edgesdk, run by the stock ncnn package: EfficientNet-Lite0 calibrated on real
photos, checked against onnxruntime fp32 on the disjoint eval photos."""
import numpy as np
import pytest

pytest.importorskip("ncnn")
onnx = pytest.importorskip("onnx")

from edgesdk.backends import registry  # noqa: E402
from edgesdk.backends.base import Artifact, ConvertOptions  # noqa: E402
from edgesdk.backends.ncnn import int8  # noqa: E402
from edgesdk.backends.ncnn.convert import find_pnnx  # noqa: E402
from edgesdk.backends.ncnn.session import NcnnSession  # noqa: E402
from edgesdk.backends.onnxruntime.session import reference_session  # noqa: E402
from edgesdk.errors import BackendUnavailable, ConversionError, EdgeSDKError, ModelError  # noqa: E402
from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference  # noqa: E402
from edgesdk.device.compare import cosine  # noqa: E402

try:
    find_pnnx()
except BackendUnavailable as e:
    pytest.skip(str(e), allow_module_level=True)


def feeds_for(paths, spec_fields):
    from tools.models import read_bgr

    spec = PreprocessSpec(**spec_fields)
    return [{"images": preprocess_reference(read_bgr(p), spec)} for p in paths]


@pytest.fixture(scope="module")
def backend():
    return registry.get("ncnn")


@pytest.fixture(scope="module")
def calib_feeds(calib_images, effnet_preprocess):
    return feeds_for(calib_images, effnet_preprocess)


@pytest.fixture(scope="module")
def eval_feeds(eval_images, effnet_preprocess):
    assert len(eval_images) >= 40
    return feeds_for(eval_images, effnet_preprocess)


@pytest.fixture(scope="module")
def refs(effnet_onnx, eval_feeds):
    with reference_session(effnet_onnx) as ref:
        return [ref.run(f)["logits"][0] for f in eval_feeds]


@pytest.fixture(scope="module")
def fp32(backend, effnet_onnx, tmp_path_factory):
    return backend.convert(effnet_onnx, tmp_path_factory.mktemp("int8") / "fp32", ConvertOptions())


@pytest.fixture(scope="module")
def kept_float(effnet_onnx):
    """ONNX names of the stem conv and every depthwise conv: the layers int8 hurts most here
    (measured: alone, the first depthwise conv's int8 weights drop the mean logit cosine to 0.996)
    and that run no faster in ncnn's x86 int8 kernels."""
    model = onnx.load(str(effnet_onnx))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 16
    return [convs[0].name, *depthwise]


@pytest.fixture(scope="module")
def effnet_int8(backend, effnet_onnx, calib_feeds, kept_float, tmp_path_factory):
    options = ConvertOptions(precision="int8", calibration=calib_feeds, calib_method="minmax", exclude=kept_float)
    return backend.convert(effnet_onnx, tmp_path_factory.mktemp("int8") / "effnet8", options)


def run_all(artifact, feeds):
    with NcnnSession(artifact) as s:
        return [s.run(f)["logits"][0] for f in feeds]


def agreement(refs, gots):
    top1 = [r.argmax() == g.argmax() for r, g in zip(refs, gots)]
    top5 = [len(set(np.argsort(-r)[:5]) & set(np.argsort(-g)[:5])) / 5 for r, g in zip(refs, gots)]
    return float(np.mean(top1)), float(np.mean(top5)), min(cosine(r, g) for r, g in zip(refs, gots))


def param_lines(artifact) -> dict[str, str]:
    lines = artifact.path("model.param").read_text().splitlines()[2:]
    return {line.split()[1]: line for line in lines}


# ------------------------------------------------------------------------------ accuracy on real photos


@pytest.mark.slow
def test_effnet_int8_against_fp32_on_every_eval_image(effnet_int8, fp32, refs, eval_feeds):
    gots = run_all(effnet_int8, eval_feeds)
    top1, top5, cos_min = agreement(refs, gots)
    gaps = [float(np.sort(r)[-1] - np.sort(r)[-2]) for r in refs]
    flips = [(round(gap, 3)) for r, g, gap in zip(refs, gots, gaps) if r.argmax() != g.argmax()]
    size8, size32 = (a.path("model.bin").stat().st_size for a in (effnet_int8, fp32))
    print(f"\neffnet int8 (min-max, stem + depthwise float) over {len(refs)} eval images: top-1 {top1:.3f}, "
          f"mean top-5 overlap {top5:.3f}, cosine min {cos_min:.4f}; flips at fp32 top-1/top-2 logit gaps {flips}; "
          f"bin {size8 / size32:.3f} of fp32")
    assert size8 <= 0.3 * size32
    assert top5 >= 0.93
    assert cos_min >= 0.97
    # The eval photos hold near-ties (fp32 top-1/top-2 logit gaps of 0.007, 0.022, 0.037, ...): int8 may
    # flip those, never a clear decision.
    assert top1 >= 0.92
    assert all(gap < 0.1 for gap in flips)


@pytest.mark.slow
def test_all_layers_int8_with_kl_requantizes_between_convs(backend, effnet_onnx, calib_feeds, refs, eval_feeds,
                                                         tmp_path):
    art = backend.convert(effnet_onnx, tmp_path / "all", ConvertOptions(precision="int8", calibration=calib_feeds))
    assert art.meta["int8"]["method"] == "kl" and art.meta["int8"]["excluded"] == []
    lines = param_lines(art)
    quantized = [name for name, line in lines.items() if " 8=1" in line or " 8=101" in line]
    assert len(quantized) == 50  # 49 convolutions and the classifier
    # expand conv -> depthwise -> project conv chains pass int8 blobs along
    fused = [name for name, line in lines.items() if " 8=101" in line]
    assert len(fused) >= 30
    assert {n for n, v in art.meta["int8"]["layers"].items() if v["requantize"]} == set(fused)
    top1, top5, cos_min = agreement(refs, run_all(art, eval_feeds))
    print(f"\neffnet int8 (KL, every layer) over {len(refs)} eval images: top-1 {top1:.3f}, "
          f"mean top-5 overlap {top5:.3f}, cosine min {cos_min:.4f}")
    assert top5 >= 0.8 and cos_min >= 0.85


@pytest.mark.slow
def test_ppocr_rec_with_attention_layers_left_float(backend, ppocr_rec_onnx, ppocr_keys, calib_images, text_image,
                                                    tmp_path):
    """A second real model with layers beyond convolutions (MultiHeadAttention, LayerNorm, Gemm): their
    weights pass through in fp32 at the right offsets (a layout slip fails the exact-size check)."""
    from edgesdk.device import postprocess
    from tools.models import read_bgr, to_input

    spec = {"size": (320, 48), "resize": "stretch", "color": "bgr", "mean": (127.5,) * 3, "std": (127.5,) * 3,
            "layout": "nchw"}
    calib = [{"x": to_input(read_bgr(p), spec)} for p in calib_images[:16]]
    art = backend.convert(ppocr_rec_onnx, tmp_path / "rec", ConvertOptions(
        precision="int8", calibration=calib, calib_method="minmax", shapes={"x": (1, 3, 48, 320)}))
    lines = param_lines(art)
    quantized = [n for n, line in lines.items() if line.split()[0] in int8.QUANTIZABLE and " 8=" in line]
    assert sorted(quantized) == sorted(art.meta["int8"]["layers"]) and len(quantized) >= 30
    # their own int8 switch is param 18: never set, they run fp32
    assert all(" 18=" not in line for line in lines.values() if line.split()[0] in ("MultiHeadAttention", "Gemm"))
    title = np.ascontiguousarray(read_bgr(text_image)[4:36, :300])  # the page's heading line
    feed = {"x": to_input(title, spec)}
    with reference_session(ppocr_rec_onnx) as ref, NcnnSession(art) as s:
        want, got = ref.run(feed), s.run(feed)
    decode = postprocess.get("ppocr-rec", labels=ppocr_keys)
    texts = [decode(out)["text"][0] for out in (want, got)]
    cos = cosine(want["softmax_11.tmp_0"], got["softmax_11.tmp_0"])
    print(f"\nPP-OCRv4 rec int8 on the page heading: {texts[1]!r} (fp32 {texts[0]!r}), cosine {cos:.4f}")
    assert texts == ["Region-based segmentation"] * 2
    assert cos >= 0.95


# ------------------------------------------------------------------------------ the file format


def test_excluded_layers_stay_float_in_the_param(effnet_int8, kept_float):
    lines = param_lines(effnet_int8)
    excluded = effnet_int8.meta["int8"]["excluded"]
    assert len(excluded) == len(kept_float) == 17
    for name in excluded:
        assert " 8=" not in lines[name]
    assert "convclip_0" in excluded  # pnnx's name for the stem conv, found from its ONNX node name
    quantized = effnet_int8.meta["int8"]["layers"]
    assert len(quantized) == 33 and not set(quantized) & set(excluded)
    for name, entry in quantized.items():
        assert lines[name].split()[0] in ("Convolution", "InnerProduct") and " 8=1" in lines[name]
        assert entry["onnx"]  # every quantized layer maps back to its ONNX node
        assert np.isfinite(entry["input_scale"]) and entry["input_scale"] > 0


def test_ncnn_computes_what_the_written_scales_say(effnet_int8, eval_feeds):
    """Ground truth of the format: int8 layers in stock ncnn compute what the int8 arithmetic, redone
    in numpy from the weights and scales read back from the written .bin, says."""
    layers = int8.read_param(effnet_int8.path("model.param").read_text())
    slots = dict(zip((l.name for l in layers), int8.read_bin(layers, effnet_int8.path("model.bin").read_bytes())))
    by_name = {l.name: l for l in layers}
    ip, conv = by_name["linear_39"], by_name["conv_37"]  # classifier (1280 -> 1000), 1x1 conv 1152 -> 320
    assert " 8=1" in ip.line() and " 8=101" in conv.line()  # conv_37 hands int8 on to convclip_16
    with NcnnSession(effnet_int8) as s:
        # both inputs are float in this build (global pooling, a float depthwise conv)
        blobs = s.blobs(eval_feeds[0], [ip.inputs[0], conv.inputs[0], ip.outputs[0], conv.outputs[0]])

    def int8_sums(layer):
        w = slots[layer.name]
        assert w["weight"].dtype == np.int8 and w["weight_scales"].shape == (layer.get(0),)
        xq = np.clip(np.rint(blobs[layer.inputs[0]].astype(np.float64) * w["input_scale"][0]), -127, 127)
        acc = w["weight"].reshape(layer.get(0), -1).astype(np.float64) @ xq.reshape(xq.shape[0], -1)
        return acc / (w["input_scale"][0] * w["weight_scales"][:, None]) + w["bias"][:, None], w

    want, _ = int8_sums(ip)
    # int32 sums are exact: only float rounding in the dequantization differs
    np.testing.assert_allclose(blobs[ip.outputs[0]], want[:, 0], rtol=0, atol=1e-4 * np.abs(want).max())
    want, w = int8_sums(conv)
    requantized = np.clip(np.rint(want * w["output_scale"][0]), -127, 127).reshape(blobs[conv.outputs[0]].shape)
    off = np.abs(blobs[conv.outputs[0]] - requantized)
    assert off.max() <= 1 and np.mean(off > 0) < 1e-3  # a rounding tie may land one step away


def test_weights_of_another_build_fail_loudly(effnet_int8, fp32, tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(effnet_int8.root, mixed)
    shutil.copy(fp32.path("model.bin"), mixed / "model.bin")
    # ncnn itself would load the longer fp32 file under the int8 param and compute garbage
    with pytest.raises(ModelError, match="does not belong"):
        NcnnSession(Artifact.load(mixed))
    from edgesdk.device.runtime import NativeSession

    if NativeSession.unavailable(Artifact.load(mixed)) is None:  # the native engine checks it the same way
        with pytest.raises(ModelError, match="does not belong"):
            NativeSession(Artifact.load(mixed))
    layers = int8.read_param(effnet_int8.path("model.param").read_text())
    data = effnet_int8.path("model.bin").read_bytes()
    with pytest.raises(ConversionError, match="does not match the param file"):
        int8.read_bin(layers, data[:-4])
    with pytest.raises(ConversionError, match="does not match the param file"):
        int8.read_bin(layers, data + bytes(4))
    with pytest.raises(ConversionError, match="does not match the param file"):
        int8.read_bin(layers, fp32.path("model.bin").read_bytes())


def test_int8_blob_encoding_round_trips():
    layer = int8.ParamLayer("Convolution", "c", ["a"], ["b"], {0: "3", 1: "1", 5: "1", 6: "6", 8: "101"})
    slots = {
        "weight": np.array([1, -2, 3, -127, 127, 0], np.int8),  # 6 bytes, padded to 8 after the tag
        "bias": np.array([0.5, -1.5, 2.0], np.float32),
        "weight_scales": np.array([10.0, 20.0, 30.0], np.float32),
        "input_scale": np.array([12.5], np.float32),
        "output_scale": np.array([7.0], np.float32),
    }
    data = int8.write_bin([layer], [slots])
    assert len(data) == 4 + 8 + 4 * (3 + 3 + 1 + 1)
    assert data[:4] == int8.TAG_INT8.to_bytes(4, "little")
    back = int8.read_bin([layer], data)[0]
    for k, v in slots.items():
        np.testing.assert_array_equal(back[k], v)


# ------------------------------------------------------------------------------ calibration


@pytest.fixture(scope="module")
def blob_stats(fp32, calib_feeds):
    layers = int8.read_param(fp32.path("model.param").read_text())
    position = {b: i for i, l in enumerate(layers) for b in l.outputs}
    blobs = sorted({l.inputs[0] for l in layers if l.type in int8.QUANTIZABLE}, key=position.get, reverse=True)
    with NcnnSession(fp32, threads=1) as s:
        return int8.calibrate(s, calib_feeds[:12], blobs)


@pytest.mark.parametrize("method", int8.METHODS)
def test_thresholds_give_finite_positive_scales(blob_stats, method):
    for blob, st in blob_stats.items():
        t = st.threshold(method)
        assert 0 < t <= st.absmax, (blob, method, t, st.absmax)
        scale = int8.input_scale(t)
        assert np.isfinite(scale) and scale >= 127 / st.absmax
    if method == "minmax":
        assert blob_stats["in0"].absmax == pytest.approx(1.0, abs=0.01)  # (255 - 127) / 128
        assert blob_stats["1"].absmax == pytest.approx(6.0)  # after the stem's ReLU6


def test_kl_clips_a_far_outlier_and_keeps_a_dense_range():
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(0, 1, 200_000))
    dense = np.histogram(values, bins=2048, range=(0, values.max()))[0]
    width = values.max() / 2048
    assert 2.5 < int8.kl_threshold(dense, width) <= values.max()
    # the same values plus one far outlier: the histogram stretches 10x, KL clips back near the bulk
    far = np.histogram(np.append(values, 10 * values.max()), bins=2048, range=(0, 10 * values.max()))[0]
    assert int8.kl_threshold(far, 10 * width) < 0.2 * 10 * values.max()


def test_weight_scales_per_channel():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.5]], np.float32)
    s = int8.weight_scales(w, 3)
    np.testing.assert_allclose(s, [127.0, 1.0, 63.5])
    q = int8.quantize_weights(w, s).reshape(3, 3)
    np.testing.assert_array_equal(q, [[64, -127, 32], [0, 0, 0], [127, 64, -32]])
    assert int8.weight_levels(int8.ParamLayer("Convolution", "c", ["a"], ["b"], {1: "3", 3: "1"})) == 31
    assert int8.weight_levels(int8.ParamLayer("Convolution", "c", ["a"], ["b"], {1: "3", 3: "2"})) == 127


# ------------------------------------------------------------------------------ names and bad input


def test_exclude_takes_ncnn_layer_names_and_refuses_unknown_ones(backend, effnet_onnx, calib_feeds, tmp_path):
    art = backend.convert(effnet_onnx, tmp_path / "ip", ConvertOptions(
        precision="int8", calibration=calib_feeds[:4], calib_method="minmax", exclude=["linear_39"]))
    assert art.meta["int8"]["excluded"] == ["linear_39"]
    assert " 8=" not in param_lines(art)["linear_39"]
    with pytest.raises(ConversionError, match="no_such_node"):
        backend.convert(effnet_onnx, tmp_path / "bad", ConvertOptions(
            precision="int8", calibration=calib_feeds[:2], exclude=["no_such_node"]))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("case, error, match", [
    ("none", ConversionError, "needs calibration feeds"),
    ("empty", ConversionError, "needs calibration feeds"),
    ("dict", ConversionError, "list of feed dicts"),
    ("name", ModelError, r"calibration sample 1: inputs are \['images'\]; missing \['images'\], unknown \['image'\]"),
    ("shape", ModelError, r"calibration sample 0: input 'images': expected shape \[1, 3, 224, 224\], got \[1, 3, 112, 112\]"),
    ("dtype", ModelError, "expected dtype float32, got float64"),
    ("method", ConversionError, "'entropy' is not one of"),
    ("exclude", ConversionError, "exclude must be a list"),
])
def test_bad_calibration_input_is_refused_before_converting(backend, effnet_onnx, calib_feeds, tmp_path, case,
                                                            error, match):
    good = calib_feeds[:2]
    x = good[0]["images"]
    options = {
        "none": dict(calibration=None),
        "empty": dict(calibration=[]),
        "dict": dict(calibration=good[0]),
        "name": dict(calibration=[good[0], {"image": x}]),
        "shape": dict(calibration=[{"images": np.ascontiguousarray(x[:, :, ::2, ::2])}]),
        "dtype": dict(calibration=[{"images": x.astype(np.float64)}]),
        "method": dict(calibration=good, calib_method="entropy"),
        "exclude": dict(calibration=good, exclude="linear_39"),
    }[case]
    with pytest.raises(error, match=match) as info:
        backend.convert(effnet_onnx, tmp_path / "out", ConvertOptions(precision="int8", **options))
    assert isinstance(info.value, EdgeSDKError)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_rk3588_profile_package_keeps_stem_and_depthwise_float(tmp_path, effnet_onnx, calib_dir, eval_feeds, refs):
    """`edgesdk package --target rk3588-cpu` (ncnn int8, the profile's float_layers): the budget holds,
    the human summary says so, the device self-check passes, and the eval photos agree with fp32."""
    import subprocess
    import sys

    import edgesdk

    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "edgesdk", "package", str(effnet_onnx), "--target", "rk3588-cpu",
                        "--calib", str(calib_dir), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n = len([f for f in calib_dir.iterdir()])  # fewer than 100 to hold back: all judged by 2-fold cross-check
    assert "int8 budget: held (top-1 kept on " in r.stdout and " photos fp32 decides, cosine min " in r.stdout
    assert f"over {n} images, 2-fold cross-check), 17 layer(s) in float" in r.stdout, r.stdout
    assert "parity: passed" in r.stdout or "parity: outside the fp32 tolerance, informational" in r.stdout
    with edgesdk.load(out) as m:
        assert m.check().passed
        q = m.manifest["quantization"]
        assert q["method"] == "minmax" and len(q["float_layers"]) == 17
        gots = [m.infer(f)["logits"][0] for f in eval_feeds]
    top1 = np.mean([r.argmax() == g.argmax() for r, g in zip(refs, gots)])
    cos = [cosine(r, g) for r, g in zip(refs, gots)]
    print(f"\nrk3588-cpu bundle on {len(gots)} eval photos: top-1 {top1:.3f}, cosine mean {np.mean(cos):.4f}")
    # measured 0.94 / 0.9975; the three flips are photos fp32 itself decides by < 0.07 logits
    assert top1 >= 0.92 and np.mean(cos) >= 0.995
