"""The TensorRT backend: build config, trtexec line, shape ranges and plan cache keys on real models.

The engine build and the session need TensorRT and an NVIDIA GPU; those tests skip here.
"""
import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import QuantType

from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, ConvertOptions, ShapeRange, TensorInfo
from edgesdk.backends.tensorrt.config import BUILD_FILE, BuildConfig, resolve_profiles, shapes_spec, trtexec_command
from edgesdk.backends.tensorrt.cuda import NOT_INSTALLED, compute_capability, jetson_compute_capability
from edgesdk.backends.tensorrt import TensorRTBackend
from edgesdk.backends.tensorrt.convert import has_qdq, qdq_problems
from edgesdk.backends.tensorrt.plan_cache import cached_plan, plan_key, plan_mismatch, store_plan
from edgesdk.errors import BackendUnavailable, BundleError, ConversionError, ModelError, UnsupportedOpError

NO_TRT = "TensorRT is not installed on this machine (it ships with JetPack on Jetson)"
DET_RANGE = ShapeRange((1, 3, 32, 32), (1, 3, 640, 640), (4, 3, 1280, 1280))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def effnet_trt(effnet_onnx, tmp_path_factory):
    return TensorRTBackend().convert(effnet_onnx, tmp_path_factory.mktemp("trt") / "effnet",
                                     ConvertOptions(precision="fp16"))


@pytest.fixture(scope="module")
def det_trt(ppocr_det_onnx, tmp_path_factory):
    options = ConvertOptions(precision="fp16", ranges={"x": DET_RANGE},
                             engine={"workspace_mb": 2048, "dla_core": 0, "builder_optimization_level": 5})
    return TensorRTBackend().convert(ppocr_det_onnx, tmp_path_factory.mktemp("trt") / "det", options)


# ---------------------------------------------------------------------------- convert: artifact + build config

def test_registry_gives_this_backend():
    assert isinstance(registry.get("tensorrt"), TensorRTBackend)


def test_effnet_static_artifact(effnet_onnx, effnet_trt):
    a = effnet_trt
    assert sorted(p.name for p in a.root.iterdir()) == ["artifact.json", "build.json", "model.onnx", "trtexec.sh"]
    assert a.files == ["model.onnx", "build.json", "trtexec.sh"] and a.precision == "fp16"
    assert sha256(a.path("model.onnx")) == sha256(effnet_onnx)  # the ONNX itself, untouched
    assert [t.to_dict() for t in a.inputs] == [{"name": "images", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert [t.to_dict() for t in a.outputs] == [{"name": "logits", "shape": [1, 1000], "dtype": "float32"}]
    assert Artifact.load(a.root).to_dict() == a.to_dict()

    build = json.loads(a.path(BUILD_FILE).read_text())
    assert build["precision"] == "fp16" and build["flags"] == ["fp16"]
    assert build["profiles"] == {}  # a static model needs no optimisation profile
    assert build["onnx_sha256"] == sha256(effnet_onnx)
    assert (build["workspace_mb"], build["dla_core"], build["builder_optimization_level"]) == (1024, None, 3)
    line = ("trtexec --onnx=model.onnx --saveEngine=model.plan --skipInference --fp16 "
            "--memPoolSize=workspace:1024 --builderOptimizationLevel=3 --timingCacheFile=timing.cache")
    assert build["trtexec"] == line and a.meta["trtexec"] == line


def test_trtexec_script_runs_that_line(effnet_trt):
    script = effnet_trt.path("trtexec.sh")
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert text.rstrip().splitlines()[-1] == effnet_trt.meta["trtexec"]
    assert 'PATH="$PATH:/usr/src/tensorrt/bin"' in text  # where JetPack puts trtexec


def test_ppocr_det_dynamic_ranges(det_trt):
    build = json.loads(det_trt.path(BUILD_FILE).read_text())
    assert build["profiles"] == {"x": {"min": [1, 3, 32, 32], "opt": [1, 3, 640, 640], "max": [4, 3, 1280, 1280]}}
    assert (build["workspace_mb"], build["dla_core"], build["gpu_fallback"], build["builder_optimization_level"]) == \
        (2048, 0, True, 5)
    assert build["trtexec"] == (
        "trtexec --onnx=model.onnx --saveEngine=model.plan --skipInference --fp16 "
        "--memPoolSize=workspace:2048 --builderOptimizationLevel=5 "
        "--minShapes=x:1x3x32x32 --optShapes=x:1x3x640x640 --maxShapes=x:4x3x1280x1280 "
        "--useDLACore=0 --allowGPUFallback --timingCacheFile=timing.cache")
    assert det_trt.inputs[0].shape[1] == 3 and isinstance(det_trt.inputs[0].shape[2], str)


def test_fixed_shape_becomes_min_opt_max(ppocr_det_onnx):
    config = TensorRTBackend().build_config(ppocr_det_onnx, ConvertOptions(shapes={"x": (1, 3, 640, 480)}))
    assert config.profiles == {"x": ShapeRange((1, 3, 640, 480), (1, 3, 640, 480), (1, 3, 640, 480))}
    assert trtexec_command(config) == (
        "trtexec --onnx=model.onnx --saveEngine=model.plan --skipInference "
        "--memPoolSize=workspace:1024 --builderOptimizationLevel=3 "
        "--minShapes=x:1x3x640x480 --optShapes=x:1x3x640x480 --maxShapes=x:1x3x640x480 "
        "--timingCacheFile=timing.cache")


def test_dla_without_gpu_fallback(ppocr_det_onnx):
    config = TensorRTBackend().build_config(
        ppocr_det_onnx, ConvertOptions(precision="fp16", ranges={"x": DET_RANGE},
                                       engine={"dla_core": 1, "gpu_fallback": False}))
    line = trtexec_command(config)
    assert "--useDLACore=1" in line and "--allowGPUFallback" not in line


def test_jetson_target_profile(effnet_onnx, tmp_path):
    from edgesdk.build.targets import load_target

    target = load_target("jetson-orin-nano")
    options = ConvertOptions(precision=target.precision, shapes=target.shapes, ranges=target.ranges,
                             engine=dict(target.engine_options))
    a = registry.get(target.engine).convert(effnet_onnx, tmp_path / "orin", options)
    build = json.loads(a.path(BUILD_FILE).read_text())
    assert (build["precision"], build["workspace_mb"], build["builder_optimization_level"]) == ("fp16", 1024, 3)


def test_names_trtexec_must_quote():
    profiles = {"input:0": ShapeRange((1, 4), (2, 4), (8, 4)), "b": ShapeRange((1,), (1,), (2,))}
    assert shapes_spec(profiles, "max") == "'input:0':8x4,b:2"
    config = BuildConfig(precision="fp32", onnx_sha256="0" * 64, profiles=profiles)
    args = shlex.split(trtexec_command(config))  # what the shell hands trtexec
    assert "--minShapes='input:0':1x4,b:1" in args and "--maxShapes='input:0':8x4,b:2" in args


def test_build_config_round_trip(det_trt):
    config = BuildConfig.load(det_trt.path(BUILD_FILE))
    assert BuildConfig.from_dict(config.to_dict()) == config
    assert config.to_dict() == json.loads(det_trt.path(BUILD_FILE).read_text())


def test_bad_build_config(tmp_path):
    (tmp_path / BUILD_FILE).write_text('{"schema": 1, "precision": "fp16"}')
    with pytest.raises(BundleError, match="malformed build config"):
        BuildConfig.load(tmp_path / BUILD_FILE)
    (tmp_path / BUILD_FILE).write_text('{"schema": 7}')
    with pytest.raises(BundleError, match="unknown build config schema 7"):
        BuildConfig.load(tmp_path / BUILD_FILE)
    with pytest.raises(BundleError, match="no TensorRT build config"):
        BuildConfig.load(tmp_path / "missing.json")


# ---------------------------------------------------------------------------- convert: what is refused

def test_dynamic_input_without_range(ppocr_det_onnx, tmp_path):
    with pytest.raises(ConversionError, match=r"input 'x' has dynamic dims .*\[inputs\.x\] with min/opt/max"
                                              r".*--shape x=\?x3x\?x\?"):
        TensorRTBackend().convert(ppocr_det_onnx, tmp_path / "out", ConvertOptions())
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize("r, error, message", [
    (ShapeRange((1, 3, 32), (1, 3, 64), (1, 3, 96)), ModelError,
     r"input 'x' has rank 4 .*got min shape \[1, 3, 32\] of rank 3"),
    (ShapeRange((1, 3, 640, 640), (1, 3, 320, 320), (1, 3, 1280, 1280)), ConversionError,
     r"min <= opt <= max in every dim; dim 2 has min 640, opt 320, max 1280"),
    (ShapeRange((1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 48, 1280)), ConversionError,
     r"dim 2 has min 32, opt 64, max 48"),
    (ShapeRange((1, 4, 32, 32), (1, 4, 64, 64), (1, 4, 96, 96)), ModelError,
     r"input 'x' is fixed at 3 in dim 1 .*got min shape \[1, 4, 32, 32\]"),
    (ShapeRange((0, 3, 32, 32), (1, 3, 64, 64), (1, 3, 96, 96)), ConversionError,
     r"min shape \[0, 3, 32, 32\] has dim 0 = 0; dims must be >= 1"),
    (ShapeRange((1, 3, 32, 32), (1, 3, 64.5, 64), (1, 3, 96, 96)), ConversionError,
     r"opt shape must be a list of integers"),
])
def test_invalid_ranges(ppocr_det_onnx, tmp_path, r, error, message):
    with pytest.raises(error, match=message):
        TensorRTBackend().convert(ppocr_det_onnx, tmp_path / "out", ConvertOptions(ranges={"x": r}))
    assert not (tmp_path / "out").exists()


def test_ranges_respect_fixed_dims_of_rec(ppocr_rec_onnx):
    with pytest.raises(ModelError, match=r"is fixed at 48 in dim 2"):
        TensorRTBackend().build_config(ppocr_rec_onnx, ConvertOptions(
            ranges={"x": ShapeRange((1, 3, 32, 32), (1, 3, 48, 320), (8, 3, 48, 1280))}))
    config = TensorRTBackend().build_config(ppocr_rec_onnx, ConvertOptions(
        ranges={"x": ShapeRange([1, 3, 48, 32], [4, 3, 48, 320], [8, 3, 48, 1280])}))  # lists are fine
    assert config.profiles["x"].max == (8, 3, 48, 1280)


def test_shape_names_and_conflicts(ppocr_det_onnx, effnet_onnx):
    b = TensorRTBackend()
    with pytest.raises(ModelError, match=r"no input named 'images'; inputs are \['x'\]"):
        b.build_config(ppocr_det_onnx, ConvertOptions(shapes={"images": (1, 3, 64, 64)}))
    with pytest.raises(ConversionError, match=r"\['x'\] have both a fixed shape and a min/opt/max range"):
        b.build_config(ppocr_det_onnx, ConvertOptions(shapes={"x": (1, 3, 64, 64)}, ranges={"x": DET_RANGE}))
    with pytest.raises(ModelError, match=r"input 'images' is fixed at 224 in dim 2"):
        b.build_config(effnet_onnx, ConvertOptions(shapes={"images": (1, 3, 320, 320)}))
    # A shape equal to a static input's own is accepted and needs no profile.
    assert b.build_config(effnet_onnx, ConvertOptions(shapes={"images": (1, 3, 224, 224)})).profiles == {}


def test_resolve_profiles_keeps_static_inputs_out():
    inputs = [TensorInfo("a", (1, 3), "float32"), TensorInfo("b", ("N", 3), "float32")]
    profiles = resolve_profiles(inputs, ConvertOptions(ranges={"b": ShapeRange((1, 3), (2, 3), (9, 3))}))
    assert list(profiles) == ["b"] and profiles["b"].max == (9, 3)


@pytest.mark.parametrize("precision, engine, message", [
    ("fp16", {"workspace": 512}, r"unknown TensorRT engine option\(s\) \['workspace'\]"),
    ("fp16", {"workspace_mb": 0}, r"workspace_mb must be a positive integer"),
    ("fp16", {"builder_optimization_level": 9}, r"builder_optimization_level must be an integer 0..5, got 9"),
    ("fp16", {"dla_core": -1}, r"dla_core must be a non-negative integer"),
    ("fp32", {"dla_core": 0}, r"DLA runs fp16 or int8 only"),
    ("fp16", {"gpu_fallback": "yes"}, r"gpu_fallback must be true or false"),
    ("bf16", {}, r"unknown precision 'bf16'"),
])
def test_engine_option_errors(effnet_onnx, precision, engine, message):
    with pytest.raises(ConversionError, match=message):
        TensorRTBackend().build_config(effnet_onnx, ConvertOptions(precision=precision, engine=engine))


def test_sklearn_onnx_ml_is_unsupported(sklearn_onnx, tmp_path):
    with pytest.raises(UnsupportedOpError) as info:
        TensorRTBackend().convert(sklearn_onnx, tmp_path / "out", ConvertOptions())
    assert info.value.backend == "tensorrt"
    assert {"ai.onnx.ml:LinearClassifier", "ai.onnx.ml:Normalizer", "ai.onnx.ml:ZipMap"} <= set(info.value.ops)
    assert "tensorrt does not support: " in str(info.value)


def test_int8_needs_qdq(effnet_onnx):
    with pytest.raises(ConversionError, match=r"int8 for TensorRT needs a quantized \(Q/DQ\) ONNX"):
        TensorRTBackend().build_config(effnet_onnx, ConvertOptions(precision="int8"))


def _qdq(source: Path, out: Path, **extra) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.uniform(-1, 1, (1, 13)).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8,
                    **extra)
    return out


def test_int8_accepts_qdq_model(linear_relu_onnx, tmp_path):
    # TensorRT's scheme: symmetric int8 activations and weights, biases float.
    qdq = _qdq(linear_relu_onnx, tmp_path / "qdq.onnx", activation_type=QuantType.QInt8,
               extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    a = TensorRTBackend().convert(qdq, tmp_path / "out", ConvertOptions(precision="int8"))
    build = json.loads(a.path(BUILD_FILE).read_text())
    assert build["flags"] == ["int8", "fp16"]
    assert "--int8 --fp16" in build["trtexec"]


def test_int8_refuses_qdq_tensorrt_cannot_parse(linear_relu_onnx, tmp_path):
    """onnxruntime's defaults (int32 bias behind a DequantizeLinear, uint8 activations with a zero point)
    are what TensorRT's parser refuses: named at convert time, not on the device."""
    import onnx

    qdq = _qdq(linear_relu_onnx, tmp_path / "qdq.onnx")
    problems = qdq_problems(onnx.load(str(qdq)))
    assert any("'0.bias_quantized' is int32" in p for p in problems), problems
    assert any("the bias of Gemm" in p for p in problems) and any("zero point must be int8 0" in p for p in problems)
    with pytest.raises(ConversionError, match=r"TensorRT cannot build this Q/DQ model: .*int32"):
        TensorRTBackend().convert(qdq, tmp_path / "out", ConvertOptions(precision="int8"))
    assert not (tmp_path / "out").exists()


def test_int8_convert_cli_with_calibration_images(effnet_onnx, calib_dir, tmp_path):
    """`edgesdk convert --backend tensorrt --precision int8 --calib DIR` on a machine without TensorRT:
    the Q/DQ ONNX is written (validation is the device's) and its graph is the one TensorRT takes."""
    import onnx

    out = tmp_path / "int8"
    r = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(effnet_onnx), "--backend", "tensorrt",
                        "--precision", "int8", "--calib", str(calib_dir), "--out", str(out), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = onnx.load(str(out / "model.onnx"))
    assert qdq_problems(m) == [] and has_qdq(m)
    assert json.loads((out / BUILD_FILE).read_text())["flags"] == ["int8", "fp16"]


def test_out_dir_that_is_not_an_artifact_is_kept(effnet_onnx, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="refusing to overwrite"):
        TensorRTBackend().convert(effnet_onnx, tmp_path, ConvertOptions())
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- plan cache key and decision

def test_plan_key_changes_with_device_and_config(det_trt):
    config = BuildConfig.load(det_trt.path(BUILD_FILE))
    key = plan_key(config, "10.3.0", (8, 7))
    assert key == plan_key(BuildConfig.from_dict(config.to_dict()), "10.3.0", (8, 7))  # deterministic
    assert key.filename.startswith("trt-10.3.0-sm87-") and key.filename.endswith(".plan")
    others = [
        plan_key(config, "10.3.1", (8, 7)),  # another TensorRT
        plan_key(config, "10.3.0", (7, 2)),  # another GPU (Xavier)
        plan_key(BuildConfig.from_dict(dict(config.to_dict(), precision="fp32", dla_core=None)), "10.3.0", (8, 7)),
        plan_key(BuildConfig.from_dict(dict(config.to_dict(), profiles={
            "x": {"min": [1, 3, 32, 32], "opt": [1, 3, 640, 640], "max": [1, 3, 1280, 1280]}})), "10.3.0", (8, 7)),
        plan_key(BuildConfig.from_dict(dict(config.to_dict(), onnx_sha256="1" * 64)), "10.3.0", (8, 7)),
    ]
    assert len({k.filename for k in [key] + others}) == 6


def test_cached_plan_decision(det_trt, tmp_path):
    config = BuildConfig.load(det_trt.path(BUILD_FILE))
    orin = plan_key(config, "10.3.0", (8, 7))
    engines = tmp_path / "engines"
    path, reason = cached_plan(engines, orin)
    assert reason == "not built yet" and path == engines / orin.filename

    store_plan(path, b"serialized plan bytes", orin, config)  # the cache treats the plan as opaque bytes
    assert cached_plan(engines, orin) == (path, None)
    assert sorted(p.name for p in engines.iterdir()) == sorted([orin.filename, path.with_suffix(".json").name])

    # Built on a Xavier: a different file, so the Orin has to build its own.
    xavier = plan_key(config, "10.3.0", (7, 2))
    assert cached_plan(engines, xavier)[1] == "not built yet"

    # A plan whose sidecar says another device (copied or renamed by hand) is rebuilt, not loaded.
    sidecar = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps(dict(sidecar, compute_capability=[7, 2])))
    reason = cached_plan(engines, orin)[1]
    assert reason == "compute_capability is [7, 2], this device needs [8, 7]"
    path.with_suffix(".json").write_text(json.dumps(dict(sidecar, trt_version="8.6.2")))
    assert "trt_version is '8.6.2'" in cached_plan(engines, orin)[1]
    path.with_suffix(".json").unlink()
    assert cached_plan(engines, orin)[1] == "no sidecar"


def test_plan_mismatch_on_config_change(det_trt):
    config = BuildConfig.load(det_trt.path(BUILD_FILE))
    key = plan_key(config, "10.3.0", (8, 7))
    assert plan_mismatch(key.to_dict(), key) is None
    changed = plan_key(BuildConfig.from_dict(dict(config.to_dict(), workspace_mb=512)), "10.3.0", (8, 7))
    assert plan_mismatch(key.to_dict(), changed).startswith("config_sha256 is ")


def test_jetson_compute_capability():
    # /proc/device-tree/compatible of an Orin NX 16GB and of an AGX Xavier devkit.
    assert jetson_compute_capability(b"nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0") == (8, 7)
    assert jetson_compute_capability(b"nvidia,p2972-0000\0nvidia,galen\0nvidia,tegra194\0") == (7, 2)
    assert jetson_compute_capability(b"raspberrypi,5-model-b\0brcm,bcm2712\0") is None


@pytest.mark.skipif(os.path.exists("/proc/device-tree/compatible") or any(
    Path(d, "libcuda.so.1").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                                               "/usr/lib64", "/usr/local/cuda/compat")),
    reason="this machine has a CUDA driver or a device tree")
def test_compute_capability_without_gpu():
    with pytest.raises(BackendUnavailable, match="cannot find the GPU's compute capability"):
        compute_capability()


# ---------------------------------------------------------------------------- availability

@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_unavailable_without_tensorrt(effnet_trt):
    backend = TensorRTBackend()
    assert backend.available() == NOT_INSTALLED
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed; it ships with JetPack"):
        backend.open(effnet_trt)


# ---------------------------------------------------------------------------- on the device

@pytest.fixture(scope="module")
def trt():
    return pytest.importorskip("tensorrt", reason=NO_TRT)


def test_build_plan_deserializes(trt, effnet_trt, tmp_path):
    from edgesdk.backends.tensorrt.plan_cache import build_plan

    config = BuildConfig.load(effnet_trt.path(BUILD_FILE))
    plan = build_plan(effnet_trt.path("model.onnx"), config, tmp_path / "timing.cache")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    assert engine is not None and (tmp_path / "timing.cache").stat().st_size > 0
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert sorted(names) == ["images", "logits"]


def test_session_matches_onnxruntime_and_caches_plan(trt, effnet_onnx, effnet_trt, eval_images, effnet_preprocess):
    from edgesdk.backends.onnxruntime.session import reference_session
    from tools.models import to_input

    ref = reference_session(effnet_onnx)
    with TensorRTBackend().open(effnet_trt) as sess:
        plan = sess.plan_path
        for path in eval_images[:4]:
            feeds = {"images": to_input(path, effnet_preprocess)}
            want, got = ref.run(feeds)["logits"], sess.run(feeds)["logits"]
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())  # fp16 engine
            assert got.argmax() == want.argmax()
    assert plan.parent == effnet_trt.path("engines") and plan.with_suffix(".json").is_file()
    built = plan.stat().st_mtime_ns
    with TensorRTBackend().open(effnet_trt) as again:  # second load: the cached plan, no rebuild
        assert again.plan_path == plan
    assert plan.stat().st_mtime_ns == built


def test_session_dynamic_shapes(trt, ppocr_det_onnx, text_image, tmp_path):
    import cv2

    from edgesdk.backends.onnxruntime.session import reference_session

    det = TensorRTBackend().convert(ppocr_det_onnx, tmp_path / "det", ConvertOptions(ranges={"x": DET_RANGE}))
    page = cv2.imread(str(text_image))
    ref = reference_session(ppocr_det_onnx)
    with TensorRTBackend().open(det) as sess:
        for h, w in ((192, 384), (640, 640)):
            x = cv2.resize(page, (w, h)).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
            x = np.ascontiguousarray(x)
            want, got = ref.run({"x": x}), sess.run({"x": x})
            (name,) = want
            assert got[name].shape == (1, 1, h, w)
            np.testing.assert_allclose(got[name], want[name], atol=1e-3)  # fp32 engine (TF32 convs)
        with pytest.raises(ModelError, match=r"outside the engine's range"):
            sess.run({"x": np.zeros((1, 3, 16, 16), np.float32)})
