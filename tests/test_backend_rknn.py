"""The rknn backend (Rockchip NPU): real rknn-toolkit2 2.5.0 in its own environment (tools/rknn_env.sh),
real models and photos, parity in the toolkit's x86 simulator. The board side (RKNNLite on an NPU) cannot
run here: it is tested up to that boundary."""
import json
import os
import re
import subprocess
import sys
import time
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


# ---------------------------------------------------------------------------- inspect / compat

def _with_op(path: Path, op: str, opset: int = 17, out=(1, 8, 32, 32), out_type="FLOAT") -> Path:
    """Conv -> Relu -> `op` -> y, real weights: a model whose one odd op the NPU must take."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node(op, ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", getattr(TensorProto, out_type), list(out))], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _compat(path: Path, **kw):
    import onnx

    from edgesdk.build.compat import check_compat

    return check_compat(onnx.shape_inference.infer_shapes(onnx.load(str(path))), model_path=path, **kw)


def test_compat_table_takes_effnet_and_ppocr_det(effnet_onnx, ppocr_det_onnx):
    """The static entry (toolkit's documented op list): both real models are NPU models; PP-OCRv4 det's dynamic
    H/W needs a fixed shape, which the note says how to give."""
    effnet = _compat(effnet_onnx, probe=False)["rknn"]
    assert effnet.supported and effnet.unsupported == [] and effnet.notes == [], effnet
    det = _compat(ppocr_det_onnx, probe=False)["rknn"]
    assert det.supported and det.unsupported == [], det
    assert any("the NPU runs fixed shapes" in n and "[inputs.x] shape" in n and "--shape x=1x3xHxW" in n
               for n in det.notes), det.notes
    shaped = _compat(ppocr_det_onnx, shapes={"x": (1, 3, 320, 320)}, probe=False)["rknn"]
    assert shaped.supported and shaped.notes == [], shaped


def test_compat_table_names_an_op_the_npu_cannot_lower(tmp_path):
    c = _compat(_with_op(tmp_path / "sign.onnx", "Sign"), probe=False)["rknn"]
    assert not c.supported and c.unsupported == ["Sign"], c
    assert any(n.startswith("Sign: rknn-toolkit2 cannot put them on the NPU") and "rk3588-cpu" in n
               for n in c.notes), c.notes
    # opset 20 is past what the toolkit loads ("need <= 19")
    c = _compat(_with_op(tmp_path / "new.onnx", "Relu", opset=20), probe=False)["rknn"]
    assert not c.supported and any("opset 20 is newer than rknn-toolkit2 (rk3588 NPU)'s max 19" in n
                                    for n in c.notes), c.notes


def test_compat_shape_math_folds_for_the_toolkit(yolo_ultralytics_onnx):
    """YOLOv8's Range and ReduceProd count dims: at a fixed shape they fold away, as the toolkit's own constant
    folding does, so they do not make the model unsupported; with dynamic dims they stay in the answer."""
    dynamic = _compat(yolo_ultralytics_onnx, probe=False)["rknn"]
    assert dynamic.unsupported == ["Range", "ReduceProd"], dynamic
    fixed = _compat(yolo_ultralytics_onnx, shapes={"images": (1, 3, 320, 320)}, probe=False)["rknn"]
    assert fixed.supported and fixed.unsupported == [], fixed
    assert any(n.startswith("Range, ReduceProd compute only from constants and input shapes") for n in fixed.notes)


def test_compat_without_the_environment_says_how_to_make_it(tmp_path, effnet_onnx, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("EDGESDK_RKNN_PYTHON", raising=False)
    c = _compat(effnet_onnx, probe=True)["rknn"]
    assert c.supported, c  # the table still answers
    assert f"not probed: {MISSING}" in c.notes and SETUP_COMMAND in MISSING, c.notes
    monkeypatch.setenv("EDGESDK_RKNN_PYTHON", str(tmp_path / "no-python"))
    c = _compat(effnet_onnx, probe=True)["rknn"]
    assert any(n.startswith("not probed: EDGESDK_RKNN_PYTHON=") and "no such file" in n for n in c.notes), c.notes


@needs_env
def test_compat_probe_builds_in_the_worker(tmp_path, effnet_onnx, ppocr_det_onnx):
    """The live check: the worker in the toolkit's environment loads and builds (fp16, rk3588) the model; what
    its compiler cannot lower is named. rknn never enters this process."""
    import onnx

    from edgesdk.backends.rknn.probe import probe
    from edgesdk.build.compat import _model_ops

    for path, shapes in ((effnet_onnx, None), (ppocr_det_onnx, {"x": (1, 3, 320, 320)})):
        c = _compat(path, shapes=shapes, probe=True)["rknn"]
        assert c.supported and c.unsupported == [], c
        assert any(re.match(r"probe: rknn-toolkit2 2\.\d+\.\d+ built it for rk3588 \(fp16\)", n) for n in c.notes), c.notes
    sign = _with_op(tmp_path / "sign.onnx", "Sign")
    c = _compat(sign, probe=True)["rknn"]
    assert not c.supported and c.unsupported == ["Sign"], c
    assert any("its NPU compiler has no lowering for Sign" in n for n in c.notes), c.notes
    # refused at build: NonZero's output shape depends on the data
    nonzero = _with_op(tmp_path / "nonzero.onnx", "NonZero", out=(4, "n"), out_type="INT64")
    c = _compat(nonzero, probe=True)["rknn"]
    assert not c.supported and c.unsupported == ["NonZero"], c
    assert any(n.startswith("probe: rknn-toolkit2") and "refused it for rk3588" in n and "need to be constant" in n
               for n in c.notes), c.notes

    t0 = time.perf_counter()
    ops = _model_ops(onnx.load(str(effnet_onnx)), inline=False)
    got = probe(None, effnet_onnx, tmp_path / "w", [("images", [1, 3, 224, 224], "float32")], ops, "rk3576")
    seconds = time.perf_counter() - t0
    assert got.ok and "for rk3576" in got.reason, got
    print(f"\nrknn compat probe, EfficientNet-Lite0 for rk3576: {seconds:.2f} s (worker start, load_onnx, build)")
    assert not any(m.split(".")[0] == "rknn" for m in sys.modules)


# ---------------------------------------------------------------------------- package: no simulator latency

FP16_PROFILE = """schema = 1
name = "rk3588-npu-fp16"
engine = "rknn"
precision = "fp16"
arch = "aarch64"
threads = 3
[engine_options]
platform = "rk3588"
[validate]
min_cosine = 0.99
"""


@needs_env
def test_package_does_not_time_the_simulator(tmp_path, effnet_onnx, calib_dir):
    """The bundle is checked in the toolkit's x86 simulator, whose time says nothing of the NPU: the manifest
    records no latency figures and says why; the report and the CLI say the same."""
    profile = tmp_path / "fp16.toml"
    profile.write_text(FP16_PROFILE)
    out = tmp_path / "b"
    r = _cli("package", effnet_onnx, "--target", profile, "--calib", calib_dir, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["validation"]["passed"] is True and m["backend"] == "rknn"
    assert m["benchmark"] is None
    assert m["benchmark_skipped"].startswith("not timed: it runs in the rknn simulator (x86) here"), m
    assert "latency here: not timed: it runs in the rknn simulator (x86)" in r.stdout, r.stdout
    report = (out / "report.md").read_text()
    assert "Not timed: it runs in the rknn simulator (x86) here" in report, report
    assert "Not timed: it runs in the rknn simulator (x86) here" in (out / "report.html").read_text()
