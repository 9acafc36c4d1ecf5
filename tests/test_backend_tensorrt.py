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
from edgesdk.backends.tensorrt.cuda import (NOT_INSTALLED, binding_mismatch, compute_capability,
                                            jetson_compute_capability, read_model_file)
from edgesdk.backends.tensorrt.session import contexts_for
from edgesdk.backends.tensorrt import TensorRTBackend
from edgesdk.backends.tensorrt.convert import has_qdq, qdq_problems
from edgesdk.backends.tensorrt.plan_cache import (CACHE_ENV, cached_plan, default_cache_dir, ensure_plan, plan_key,
                                                  plan_mismatch, store_plan)
from edgesdk.errors import (BackendUnavailable, BundleError, ConversionError, EdgeSDKError, ModelError,
                            UnsupportedOpError)

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
        "trtexec --onnx=model.onnx --saveEngine=model.plan --skipInference --noTF32 "
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

ORIN_NANO = "Orin"  # what cuDeviceGetName answers on a Jetson Orin; the device tree tells the boards apart
ORIN_NANO_DT = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"


def test_plan_key_changes_with_device_and_config(det_trt):
    config = BuildConfig.load(det_trt.path(BUILD_FILE))
    key = plan_key(config, "10.3.0", (8, 7), ORIN_NANO_DT)
    assert key == plan_key(BuildConfig.from_dict(config.to_dict()), "10.3.0", (8, 7), ORIN_NANO_DT)  # deterministic
    assert key.filename.startswith("trt-10.3.0-sm87-nvidia-jetson-orin-nano-")
    assert key.filename.endswith(config.digest()[:16] + ".plan")
    others = [
        plan_key(config, "10.3.1", (8, 7), ORIN_NANO_DT),  # another TensorRT
        plan_key(config, "10.3.0", (7, 2), ORIN_NANO_DT),  # another GPU architecture (Xavier)
        plan_key(config, "10.3.0", (8, 7), "NVIDIA Jetson AGX Orin Developer Kit"),  # same sm_87, other board
        plan_key(config, "10.3.0", (8, 7), ORIN_NANO_DT[:-6]),  # a name that shares a long prefix
        plan_key(BuildConfig.from_dict(dict(config.to_dict(), precision="fp32", dla_core=None)), "10.3.0", (8, 7),
                 ORIN_NANO_DT),
        plan_key(BuildConfig.from_dict(dict(config.to_dict(), profiles={
            "x": {"min": [1, 3, 32, 32], "opt": [1, 3, 640, 640], "max": [1, 3, 1280, 1280]}})), "10.3.0", (8, 7),
            ORIN_NANO_DT),
        plan_key(BuildConfig.from_dict(dict(config.to_dict(), onnx_sha256="1" * 64)), "10.3.0", (8, 7), ORIN_NANO_DT),
    ]
    assert len({k.filename for k in [key] + others}) == 8


def test_plan_key_ignores_where_the_bundle_lies(det_trt, tmp_path):
    """A .tar.gz bundle unpacks to a new temporary directory on every load: the key is the content's."""
    import shutil

    keys = []
    for where in ("unpacked-1", "unpacked-2"):
        shutil.copytree(det_trt.root, tmp_path / where)
        keys.append(plan_key(BuildConfig.load(tmp_path / where / BUILD_FILE), "10.3.0", (8, 7), ORIN_NANO_DT))
    assert keys[0] == keys[1]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "edgesdk" / "engines"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"


def test_cached_plan_for_a_read_only_bundle(det_trt, tmp_path, monkeypatch):
    """The plan is looked up in the cache, not in the bundle: a read-only bundle with a plan cached for
    this device loads it without writing anything or rebuilding."""
    import shutil
    import stat

    bundle = tmp_path / "bundle"
    shutil.copytree(det_trt.root, bundle)
    config = BuildConfig.load(bundle / BUILD_FILE)
    key = plan_key(config, "10.3.0", (8, 7), ORIN_NANO_DT)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    store_plan(default_cache_dir() / key.filename, b"plan bytes", key, config)
    for p in [bundle, *bundle.iterdir()]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        art = Artifact.load(bundle)
        assert ensure_plan(art, config, key) == tmp_path / "cache" / key.filename  # $EDGESDK_ENGINE_CACHE
        assert ensure_plan(art, config, key, tmp_path / "cache") == tmp_path / "cache" / key.filename  # cache_dir
    finally:
        for p in [bundle, *bundle.iterdir()]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    # A plan that does not hash to its sidecar's sha256 is not loaded: ensure_plan would rebuild it.
    (tmp_path / "cache" / key.filename).write_bytes(b"plan bytes, modified")
    assert "does not match the sha256 in its sidecar" in cached_plan(tmp_path / "cache", key)[1]


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


def test_fp32_clears_tf32(effnet_onnx):
    """TensorRT enables TF32 by default (fp32 convolutions with a 10-bit mantissa on Orin): fp32 clears it."""
    b = TensorRTBackend()
    fp32, fp16 = (b.build_config(effnet_onnx, ConvertOptions(precision=p)) for p in ("fp32", "fp16"))
    assert fp32.cleared_flags == ("tf32",) and "--noTF32" in trtexec_command(fp32)
    assert fp16.cleared_flags == () and "--noTF32" not in trtexec_command(fp16)
    assert fp32.to_dict()["cleared_flags"] == ["tf32"]


@pytest.mark.parametrize("binding, version, cuda, fix", [
    ("cuda-python", "13.0.1", (12, 6), "pip install 'cuda-python>=12,<13'"),  # JetPack 6 with the newest wheel
    ("cuda-bindings", "12.9.0", (13, 0), "pip install 'cuda-bindings>=13,<14'"),
    ("cuda-python", "12.6.2", (12, 2), None),  # same major: the runtime API is compatible
    ("cuda-python", None, (12, 6), None),  # not installed: nothing to say here
    ("cuda-python", "13.0.0", None, None),  # no driver answers: TensorRT reports that itself
])
def test_cuda_binding_must_match_the_cuda_major(binding, version, cuda, fix):
    reason = binding_mismatch(binding, version, cuda)
    if fix is None:
        assert reason is None
    else:
        assert fix in reason and f"built for CUDA {version.split('.')[0]}" in reason


def test_threads_are_execution_contexts(effnet_trt, det_trt):
    static = BuildConfig.load(effnet_trt.path(BUILD_FILE))
    assert (contexts_for(None, static, "x"), contexts_for(4, static, "x")) == (1, 4)
    dynamic = BuildConfig.load(det_trt.path(BUILD_FILE))
    assert contexts_for(1, dynamic, "det") == 1
    with pytest.raises(EdgeSDKError, match=r"det: threads = 6 asks for 6 TensorRT execution contexts, but inputs "
                                           r"\['x'\] are dynamic .*load with threads=1"):
        contexts_for(6, dynamic, "det")
    with pytest.raises(EdgeSDKError, match="threads must be a positive integer"):
        contexts_for(0, static, "x")


def test_jetson_profiles_load_with_their_threads(effnet_onnx, ppocr_det_onnx):
    from edgesdk.build.targets import load_target

    for name in ("jetson-orin-nano", "jetson-orin-nano-int8"):
        target = load_target(name)
        config = TensorRTBackend().build_config(ppocr_det_onnx, ConvertOptions(ranges={"x": DET_RANGE}))
        assert contexts_for(target.threads or None, config, name) == 1  # a dynamic model loads too


def test_device_name_from_the_device_tree(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0")
    assert read_model_file(str(model)) == ORIN_NANO_DT
    assert read_model_file(str(tmp_path / "missing")) is None


def test_no_jetpack5_profile():
    """JetPack 5 (Xavier NX's last) ships TensorRT 8.5 and Python 3.8: edgesdk needs Python >= 3.10 and
    TensorRT 10's API and trtexec flags, so no built-in profile promises it."""
    from edgesdk.build.targets import list_targets, load_target

    tensorrt = [load_target(n) for n in list_targets() if load_target(n).engine == "tensorrt"]
    assert tensorrt and "jetson-xavier-nx" not in list_targets()
    assert all("JetPack 6" in t.description for t in tensorrt)


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


def test_session_matches_onnxruntime_and_caches_plan(trt, effnet_onnx, effnet_trt, eval_images, effnet_preprocess,
                                                     tmp_path):
    from edgesdk.backends.onnxruntime.session import reference_session
    from tools.models import to_input

    ref = reference_session(effnet_onnx)
    cache = tmp_path / "engines"
    with TensorRTBackend().open(effnet_trt, cache_dir=cache) as sess:
        plan = sess.plan_path
        for path in eval_images[:4]:
            feeds = {"images": to_input(path, effnet_preprocess)}
            want, got = ref.run(feeds)["logits"], sess.run(feeds)["logits"]
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())  # fp16 engine
            assert got.argmax() == want.argmax()
    assert plan.parent == cache and plan.with_suffix(".json").is_file()
    assert not effnet_trt.path("engines").exists()  # nothing written into the bundle
    built = plan.stat().st_mtime_ns
    with TensorRTBackend().open(effnet_trt, threads=2, cache_dir=cache) as again:  # cached plan, two contexts
        assert again.plan_path == plan and again.threads == 2
        feeds = {"images": to_input(eval_images[0], effnet_preprocess)}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: again.run(feeds)["logits"], range(8)))
        assert all(np.array_equal(o, outs[0]) for o in outs)
    assert plan.stat().st_mtime_ns == built


def test_session_dynamic_shapes(trt, ppocr_det_onnx, text_image, tmp_path):
    import cv2

    from edgesdk.backends.onnxruntime.session import reference_session

    det = TensorRTBackend().convert(ppocr_det_onnx, tmp_path / "det", ConvertOptions(ranges={"x": DET_RANGE}))
    page = cv2.imread(str(text_image))
    ref = reference_session(ppocr_det_onnx)
    with TensorRTBackend().open(det, cache_dir=tmp_path / "engines") as sess:
        for h, w in ((192, 384), (640, 640)):
            x = cv2.resize(page, (w, h)).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
            x = np.ascontiguousarray(x)
            want, got = ref.run({"x": x}), sess.run({"x": x})
            (name,) = want
            assert got[name].shape == (1, 1, h, w)
            np.testing.assert_allclose(got[name], want[name], atol=1e-4)  # fp32 engine, TF32 cleared
        with pytest.raises(ModelError, match=r"outside the engine's range"):
            sess.run({"x": np.zeros((1, 3, 16, 16), np.float32)})
