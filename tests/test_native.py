"""The native module: built from this version, ISA chosen by the build, kernels correct and copy-free."""
import platform

import numpy as np
import pytest

import edgesdk
from edgesdk import _native


def test_version_matches_package():
    assert _native.version() == edgesdk.__version__


def test_isa_selected_by_build():
    info = _native.build_info()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert info["arch"] == "x86_64"
        assert "avx2" in info["compiled_isa"]
        expected = "avx2" if "avx2" in info["runtime_isa"] else "scalar"
        assert info["kernels"] == expected
    elif machine in ("aarch64", "arm64"):
        assert info["arch"] == "aarch64" and info["kernels"] == "neon"


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 33, 224 * 224 * 3])
def test_u8_to_f32_matches_numpy(n):
    rng = np.random.default_rng(n)
    src = rng.integers(0, 256, n, dtype=np.uint8)
    out = np.full(n, np.nan, dtype=np.float32)
    _native.u8_to_f32(src, out, 127.5, 1 / 127.5)
    np.testing.assert_allclose(out, (src.astype(np.float32) - 127.5) * np.float32(1 / 127.5), rtol=0, atol=1e-6)


def test_u8_to_f32_refuses_silent_copies():
    src = np.zeros(16, np.uint8)
    with pytest.raises(TypeError):
        _native.u8_to_f32(src, np.zeros(16, np.float64))  # would need a converted copy of out
    with pytest.raises(TypeError):
        _native.u8_to_f32(src.astype(np.int32), np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="16 elements, out has 8"):
        _native.u8_to_f32(src, np.zeros(8, np.float32))
