"""The rknn backend (Rockchip NPU): real rknn-toolkit2 2.5.0 in its own environment (tools/rknn_env.sh),
real models and photos, parity in the toolkit's x86 simulator. The board side (RKNNLite on an NPU) cannot
run here: it is tested up to that boundary."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, TensorInfo
from edgesdk.backends.rknn.env import MISSING, SETUP_COMMAND, rknn_python
from edgesdk.backends.rknn.session import RknnLiteSession, npu_inputs
from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference, read_image
from edgesdk.errors import BackendUnavailable, ParityError

REPO = Path(__file__).resolve().parents[1]
needs_env = pytest.mark.skipif(rknn_python() is None, reason=f"{MISSING} (tests/test_backend_rknn.py)")

OCR_DET_PROFILE = """schema = 1
name = "rk3588-npu-ocr-det"
engine = "rknn"
precision = "int8"
arch = "aarch64"
threads = 3
[engine_options]
platform = "rk3588"
[inputs.x]
shape = [1, 3, 320, 320]
[postprocess]
kind = "ppocr-det"
[validate]
min_cosine = 0.99
[quantize]
calib_images = 100
min_cosine = 0.98
method = "minmax"
"""


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgesdk", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, cwd=REPO)


def _print_bundle(name: str, manifest: dict) -> None:
    v, q = manifest["validation"], manifest["quantization"]
    print(f"\n{name}: build {manifest['build_seconds']}")
    for o in v.get("outputs", []):
        print(f"  simulator parity {o['name']}: cosine min {o['cosine_min']:.4f} max abs {o['max_abs']:.3g} "
              f"top-1 {o['top1_agreement']}")
    for s in q["steps"]:
        print(f"  budget step: {len(s['float_nodes'])} float layer(s): {s['check']}")
    print(f"  kept float: {q['fallback']}")


def test_missing_environment_exits_2_naming_the_command(tmp_path, effnet_onnx, calib_dir):
    out = tmp_path / "bundle"
    r = _cli("package", effnet_onnx, "--target", "rk3588-npu", "--calib", calib_dir, "--out", out,
             env={"EDGESDK_RKNN_PYTHON": str(tmp_path / "no-such-python")})
    assert r.returncode == 2, r.stderr
    assert SETUP_COMMAND in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
    # no override and an empty cache: the same answer
    r = _cli("convert", effnet_onnx, "--backend", "rknn", "--precision", "fp16", "--out", out,
             env={"EDGESDK_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2 and SETUP_COMMAND in r.stderr, r.stderr


def test_npu_inputs_give_back_the_pixels(effnet_preprocess, real_images):
    """The NPU applies mean/std itself: the normalised feed turned back equals the resized pixels
    (our preprocessing with mean 0, std 1), so the board and the simulator see what the camera saw."""
    spec = PreprocessSpec(**effnet_preprocess)
    frame = read_image(next(iter(real_images.values())))
    feed = {"images": preprocess_reference(frame, spec)}
    raw = preprocess_reference(frame, PreprocessSpec(**{**effnet_preprocess, "mean": 0.0, "std": 1.0}))
    art = Artifact("rknn", "int8", Path("."), ["model.rknn"], [], [],
                   {"folded": {"images": {"mean": list(spec.mean), "std": list(spec.std), "layout": "nchw"}}})
    art.inputs = [TensorInfo("images", (1, 3, 224, 224), "float32")]
    (got,), formats = npu_inputs(art, feed)
    assert formats == ["nchw"]
    np.testing.assert_allclose(got, raw, atol=1e-3)


def test_board_session_stops_at_the_hardware_boundary(tmp_path):
    """RKNNLite needs an aarch64 board with the NPU driver: here it says so instead of failing later."""
    art = Artifact("rknn", "int8", tmp_path, ["model.rknn"], [], [], {"platform": "rk3588"})
    (tmp_path / "model.rknn").write_bytes(b"\0" * 16)
    art.save()
    try:
        import rknnlite  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="rknn-toolkit-lite2"):
            RknnLiteSession(art)
        pytest.skip("rknn-toolkit-lite2 runs only on an RK35xx board (aarch64 + NPU driver): "
                    "inference on the NPU is checked there by Model.check()")


@needs_env
def test_rknn_is_never_imported_into_the_main_process(tmp_path, effnet_onnx, effnet_preprocess, calib_images):
    code = f"""
import sys
from pathlib import Path
from edgesdk.backends import registry
from edgesdk.backends.base import ConvertOptions
from edgesdk.device.preprocess import PreprocessSpec, preprocess_reference, read_image
spec = PreprocessSpec(**{effnet_preprocess!r})
feeds = [{{"images": preprocess_reference(read_image(p), spec)}} for p in {[str(p) for p in calib_images[:4]]!r}]
be = registry.get("rknn")
art = be.convert(Path({str(effnet_onnx)!r}), Path({str(tmp_path / "art")!r}),
                 ConvertOptions(precision="int8", calibration=feeds, preprocess=spec, calib_method="minmax"))
with be.open(art) as s:
    out = s.run(feeds[0])["logits"]
print(out.shape, sorted(m for m in sys.modules if m.split(".")[0] in ("rknn", "torch")))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("(1, 1000) []"), r.stdout


@needs_env
def test_effnet_rk3588_npu_int8_bundle(tmp_path, effnet_onnx, calib_dir):
    """EfficientNet-Lite0 for rk3588-npu with the profile's budget (top-1 drop <= 0.01 on held-back photos):
    the bundle holds it, with the fallback steps in the manifest, or the build fails naming its best result."""
    try:
        res = edgesdk.package(effnet_onnx, "rk3588-npu", tmp_path / "b", calib=calib_dir)
    except ParityError as e:
        assert "best reached" in str(e) and "float layer" in str(e), str(e)
        print(f"\nrk3588-npu EfficientNet-Lite0: {e}")
        return
    m = res.manifest
    _print_bundle("rk3588-npu EfficientNet-Lite0", m)
    assert m["backend"] == "rknn" and m["precision"] == "int8"
    assert (res.out / "model" / "model.rknn").is_file()
    q = m["quantization"]
    assert q["steps"] and q["steps"][-1]["check"]["passed"] and q["checked_on"].startswith("rknn simulator")
    assert len(q["steps"]) == len(q["fallback"]) + 1
    if q["fallback"]:  # the ranking came from the toolkit's accuracy_analysis, and its table is kept
        assert "accuracy_analysis.txt" in m["files"] or any(f.endswith("accuracy_analysis.txt") for f in m["files"])
    out = m["validation"]["outputs"][0]
    assert out["name"] == "logits" and out["cosine_min"] > 0.95


@needs_env
def test_ppocr_det_rk3588_npu_int8_bundle(tmp_path, ppocr_det_onnx, calib_images, text_image):
    """PP-OCRv4 det (320x320 on the NPU) with a cosine budget: calibration photos plus a text page, so the
    held-back and parity images include one that makes the detector fire. On a photo without text the
    probability map is ~0 everywhere and its cosine says nothing: the budget judges such a sample by
    max-abs within the int8 atol, as the parity gate does, and the text page by cosine."""
    calib = tmp_path / "calib"
    calib.mkdir()
    for p in [*calib_images[:20], text_image]:
        (calib / p.name).symlink_to(p)
    profile = tmp_path / "det.toml"
    profile.write_text(OCR_DET_PROFILE)
    # The simulator misses it where the map fires: 14 of 21 photos barely fire and hold on max-abs
    # (5.8e-06), 3 of the 7 judged by cosine are under 0.98 (worst 0.80) with 12 layers in float.
    with pytest.raises(ParityError) as e:
        edgesdk.package(ppocr_det_onnx, profile, tmp_path / "b", calib=calib)
    print(f"\nrk3588-npu PP-OCRv4 det: {e.value}")
    # the best result names how many samples the max-abs rule held and the cosine of the others
    assert re.search(r"best reached .*; \d+ barely firing held by max-abs \S+ <= atol 0.05, [1-9]\d* judged by "
                     r"cosine \(min [01]\.\d+, [1-9]\d* under\)", str(e.value)), str(e.value)
    assert not (tmp_path / "b").exists()


@needs_env
def test_fp16_convert_runs_in_the_simulator(tmp_path, effnet_onnx):
    r = _cli("convert", effnet_onnx, "--backend", "rknn", "--precision", "fp16", "--out", tmp_path / "a", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["passed"] and d["outputs"][0]["cosine_min"] > 0.99, d
    print(f"\nrknn fp16 EfficientNet-Lite0 simulator cosine min {d['outputs'][0]['cosine_min']:.5f}")


def test_registry_knows_rknn():
    assert registry.get("rknn").precisions == ("fp16", "int8")
