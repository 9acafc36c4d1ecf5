"""The command line as a user meets it: exit codes, one-line errors, --json keys of the public contract."""
import json
import os
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "edgesdk", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_user_error(res, *needles):
    assert res.returncode == 2, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_inspect_json_contract(effnet_onnx):
    res = run("inspect", effnet_onnx, "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    for key in ("opset", "inputs", "outputs", "ops", "params", "flops", "compat"):
        assert key in d
    assert d["inputs"][0] == {"name": "images", "shape": [1, 3, 224, 224], "dtype": "float32"}
    assert set(d["compat"]) == {"ncnn", "openvino", "tensorrt", "onnxruntime", "rknn"}
    for entry in d["compat"].values():
        assert set(entry) == {"supported", "unsupported", "notes"}
        assert entry["supported"] is True


def test_inspect_human_table(effnet_onnx):
    res = run("inspect", effnet_onnx, "--no-probe")
    assert res.returncode == 0, res.stderr
    assert "params" in res.stdout and "4.6" in res.stdout and "GFLOP" not in res.stdout
    for backend in ("ncnn", "openvino", "tensorrt", "onnxruntime", "rknn"):
        assert backend in res.stdout


def test_inspect_sklearn_compat(sklearn_onnx):
    d = json.loads(run("inspect", sklearn_onnx, "--json").stdout)
    assert d["compat"]["onnxruntime"]["supported"] is True
    for b in ("ncnn", "openvino", "tensorrt", "rknn"):
        assert d["compat"][b]["supported"] is False
        assert any("LinearClassifier" in op for op in d["compat"][b]["unsupported"]), d["compat"][b]


def test_inspect_rec_names_dynamic_width(ppocr_rec_onnx):
    res = run("inspect", ppocr_rec_onnx, "--json", "--no-probe")
    d = json.loads(res.stdout)
    width = d["inputs"][0]["shape"][3]
    assert isinstance(width, str)
    assert any(width in note for note in d["compat"]["tensorrt"]["notes"])


@pytest.mark.parametrize("kind", ["truncated", "random", "missing", "directory"])
def test_bad_model_files_exit_2(tmp_path, effnet_onnx, kind):
    p = tmp_path / "m.onnx"
    if kind == "truncated":
        p.write_bytes(effnet_onnx.read_bytes()[:50_000])
    elif kind == "random":
        p.write_bytes(os.urandom(4096))
    elif kind == "directory":
        p = tmp_path
    for cmd in ("inspect", "check"):
        assert_user_error(run(cmd, p), str(p))


def test_check(two_transpose_onnx, effnet_onnx):
    res = run("check", two_transpose_onnx, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["valid"] is True


def test_usage_errors_are_one_line(effnet_onnx):
    assert_user_error(run("inspect", effnet_onnx, "--shape", "images=1x3xbad"), "bad --shape")
    assert_user_error(run("nosuchcommand"))
    assert_user_error(run("inspect"))
