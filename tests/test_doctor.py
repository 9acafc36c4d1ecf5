"""`edgesdk doctor`: platform detection from the files a board has, the tiny model written with numpy
alone, and the run of that model on every engine present here against the numpy reference."""
import json
import subprocess
import sys

import numpy as np
import pytest

from edgesdk.device import board, doctor

ORIN_CPUINFO = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp \
uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
"""
RPI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
Hardware\t: BCM2835
"""
X86_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse sse2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16
"""
TOP_KEYS = ["edgesdk", "platform", "engines", "native", "model", "checks", "ok"]


def test_onnx_bytes_are_a_valid_model_that_onnxruntime_agrees_with():
    """The hand-written protobuf is a checked ONNX model, and numpy's reference is what ONNX Runtime computes."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(doctor.onnx_bytes())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    sess = ort.InferenceSession(doctor.onnx_bytes(), providers=["CPUExecutionProvider"])
    x = doctor.sample_input()
    y = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(y, doctor.reference(x), atol=1e-5)
    assert np.abs(y).max() > 0.1 and (doctor.reference(x) != 0).all()  # the model fires: a real comparison


def test_cpu_features():
    assert board.cpu_features(ORIN_CPUINFO) == {"neon": True, "dotprod": True, "i8mm": False, "fp16": True,
                                                "avx2": False, "avx512": False, "bf16": False, "vnni": False}
    rpi4 = board.cpu_features(RPI4_CPUINFO)
    assert rpi4["neon"] and not rpi4["dotprod"] and not rpi4["fp16"]  # Cortex-A72: ARMv8.0
    x86 = board.cpu_features(X86_CPUINFO)
    assert x86["avx2"] and x86["avx512"] and x86["bf16"] and x86["vnni"] and not x86["neon"]
    assert board.cpu_model(X86_CPUINFO) == "AMD EPYC 9R14" and board.cpu_model(RPI4_CPUINFO) == "BCM2835"


def test_jetson_release_files():
    text = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
            "DATE: Wed Jan  8 01:49:37 UTC 2025")
    assert board.l4t_release(text) == "36.4.3" and board.jetpack("36.4.3") == "6.1/6.2"
    assert board.jetpack("35.5.0") == "5.1.3" and board.l4t_release("not a release file") is None
    assert board.board_kind("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", None) == "jetson"
    assert board.board_kind("Raspberry Pi 5 Model B Rev 1.0", "raspberrypi,5-model-b\nbrcm,bcm2712") == "raspberry-pi"
    assert board.board_kind("Radxa ROCK 5B", "radxa,rock-5b\nrockchip,rk3588") == "rockchip"
    assert board.board_kind(None, None) is None


def test_cuda_and_cudnn_versions_from_their_files(tmp_path):
    (tmp_path / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}')
    assert board.cuda_version(str(tmp_path)) == "12.6.68"
    header = tmp_path / "cudnn_version.h"
    header.write_text("#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 3\n#define CUDNN_PATCHLEVEL 0\n")
    assert board._header_version([tmp_path / "missing.h", header], ("CUDNN_MAJOR", "CUDNN_MINOR", "CUDNN_PATCHLEVEL")) \
        == "9.3.0"
    assert board.cuda_version(str(tmp_path / "none")) is None


def test_a_wrong_engine_result_is_reported(tmp_path, monkeypatch):
    """A model that computes something else fails the check: one ncnn weight changed."""
    param, data = doctor.ncnn_files()
    bad = bytearray(data)
    bad[4:8] = np.float32(3.0).tobytes()  # the first conv weight, after the float32 tag
    monkeypatch.setattr(doctor, "ncnn_files", lambda: (param, bytes(bad)))
    row = doctor.check("ncnn", tmp_path / "ncnn", native=False)
    assert row["error"] is None and not row["ok"] and row["max_abs"] > doctor.ATOL


def test_doctor_json_here():
    """x86 with the locked engines: onnxruntime, OpenVINO and ncnn present, each within atol of numpy,
    the native module's ncnn and OpenVINO too; TensorRT absent with its reason."""
    r = subprocess.run([sys.executable, "-m", "edgesdk", "doctor", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert list(d) == TOP_KEYS
    assert list(d["platform"]) == ["system", "machine", "python", "board", "jetson", "cpu"]
    assert list(d["platform"]["jetson"]) == ["l4t", "jetpack", "cuda", "cudnn", "tensorrt"]
    assert list(d["platform"]["cpu"]["features"]) == list(board.CPU_FEATURES)
    engines = {e["name"]: e for e in d["engines"]}
    assert list(engines) == list(doctor.ENGINES)
    for name in ("onnxruntime", "openvino", "ncnn"):
        assert engines[name]["available"] and engines[name]["version"], engines[name]
    if not engines["tensorrt"]["available"]:
        assert "TensorRT is not installed" in engines["tensorrt"]["reason"]
    runs = {(c["engine"], c["runner"]) for c in d["checks"]}
    assert {("onnxruntime", "python"), ("openvino", "python"), ("ncnn", "python")} <= runs
    assert {"ncnn", "openvino"} <= set(d["native"]["engines"])
    assert {(e, "native") for e in d["native"]["engines"]} <= runs
    for c in d["checks"]:
        assert list(c) == ["engine", "runner", "ok", "max_abs", "seconds", "error"]
        assert c["ok"] and c["max_abs"] <= doctor.ATOL, c
    assert d["ok"] is True


def test_doctor_table_here():
    r = subprocess.run([sys.executable, "-m", "edgesdk", "doctor"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "all engines present match numpy" in r.stdout
    assert any(line.startswith("ncnn") and line.rstrip().endswith("ok") for line in r.stdout.splitlines())


@pytest.mark.skipif(not board.read_text("/proc/device-tree/model"), reason="no device tree on this machine")
def test_board_model_is_read_here():
    assert board.detect()["board"]["model"] == board.read_text("/proc/device-tree/model")
