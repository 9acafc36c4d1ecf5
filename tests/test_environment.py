"""The environment the suite runs in is the one the lock describes, with both native engines built."""
import platform
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "tools" / "lock.txt"
# `make setup` marks the project environment it filled from the lock.
IN_PROJECT_ENV = (Path(sys.prefix) / ".setup.stamp").exists()


def _lock():
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_lock_pins_the_engines():
    pins = {k.lower().replace("_", "-"): v for k, v in _lock().items()}
    for name in ("onnx", "onnxruntime", "openvino", "nncf", "ncnn", "pnnx", "onnxslim", "numpy",
                 "opencv-python-headless", "scikit-image", "scikit-learn", "pytest", "torch"):
        assert name in pins, f"{name} is not pinned in {LOCK}"
    assert pins["torch"].startswith("2.13.0"), "torch must stay the local CPU build (others pull CUDA)"


@pytest.mark.skipif(not IN_PROJECT_ENV, reason="not the project environment that `make setup` fills from the lock")
def test_installed_versions_are_the_locked_ones():
    wrong = []
    for name, want in _lock().items():
        try:
            got = version(name)
        except PackageNotFoundError:
            got = None
        if got != want:
            wrong.append(f"{name}: locked {want}, installed {got}")
    assert not wrong, "the environment differs from tools/lock.txt:\n" + "\n".join(wrong)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"),
                    reason="OpenVINO ships wheels for x86-64 and aarch64 only")
def test_native_module_has_both_engines():
    import edgesdk._native as native

    assert {"ncnn", "openvino"} <= set(native.engines()), native.engines()
