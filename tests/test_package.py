"""The convert pipeline end to end: inspect -> optimize -> convert -> parity gate -> atomic write."""
import json
import os
import subprocess
import sys

import pytest

from edgesdk.errors import ParityError, UnsupportedOpError
from edgesdk.build.package import convert
from edgesdk.build.parity import PARITY_FILE, REFERENCE_FILE, validate_artifact
from edgesdk.device.preprocess import PreprocessSpec
from edgesdk.device.compare import Tolerance


@pytest.fixture(scope="module")
def spec(effnet_preprocess):
    return PreprocessSpec(**effnet_preprocess)


@pytest.mark.parametrize("backend,precision", [("onnxruntime", "fp32"), ("openvino", "fp32"), ("ncnn", "fp32"),
                                               ("openvino", "fp16"), ("ncnn", "fp16")])
def test_effnet_converts_with_parity(tmp_path, effnet_onnx, eval_images, spec, backend, precision):
    out = tmp_path / "art"
    r = convert(effnet_onnx, backend, out, precision=precision, images=eval_images[:12], spec=spec, samples=12)
    assert r.parity.passed and r.parity.top1_agreement == 1.0
    assert r.parity.cosine_min >= (0.9999 if precision == "fp32" else 0.999)
    assert (out / REFERENCE_FILE).is_file() and json.loads((out / PARITY_FILE).read_text())["passed"]
    assert all((out / f).is_file() for f in r.artifact.files)
    again = validate_artifact(out, samples=2)  # reopens the directory alone
    assert again.passed


def test_parity_failure_writes_nothing_and_locates_divergence(tmp_path, effnet_onnx, eval_images, spec):
    out = tmp_path / "art"
    impossible = Tolerance(min_cosine=0.9999999, atol=1e-7)
    with pytest.raises(ParityError, match="would pass with"):
        convert(effnet_onnx, "ncnn", out, precision="fp16", images=eval_images[:2], spec=spec, samples=2,
                tolerance=impossible)
    assert not out.exists() and not any(p.name.startswith(".art") for p in tmp_path.iterdir())

    r = convert(effnet_onnx, "ncnn", out, precision="fp16", images=eval_images[:2], spec=spec, samples=2,
                tolerance=impossible, gate=False)
    d = r.parity.divergence
    assert not r.parity.passed and d is not None
    assert d["op_type"] and d["cosine"] < 0.9999999 and d["max_abs"] > 1e-7
    assert "first divergence" in r.parity.summary()


def test_unsupported_op_refused_before_conversion(tmp_path, sklearn_onnx):
    for backend in ("ncnn", "openvino"):
        with pytest.raises(UnsupportedOpError, match="LinearClassifier"):
            convert(sklearn_onnx, backend, tmp_path / backend)
        assert not (tmp_path / backend).exists()


def test_cli_convert_json_and_exit_codes(tmp_path, effnet_onnx, sklearn_onnx):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    res = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(effnet_onnx), "--backend", "openvino",
                          "--out", str(tmp_path / "ov"), "--samples", "2", "--mean", "127", "--std", "128", "--json"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert {"cosine_min", "max_abs", "top1_agreement", "passed"} <= set(d) and d["passed"]
    res = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(sklearn_onnx), "--backend", "ncnn",
                          "--out", str(tmp_path / "sk")], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "LinearClassifier" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "edgesdk", "validate", str(tmp_path / "ov"), "--json"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["passed"] is True
