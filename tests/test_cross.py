"""Cross builds for boards, run under qemu-user (tools/cross/): the C++ tests (the NEON preprocessing
kernels, the ncnn engine, the bundle reader) for aarch64 and armv7, and edgesdk-run on a real
EfficientNet-Lite0 ncnn bundle packaged for the Raspberry Pi 5, against the x86 run of the same bundle.

Needs Debian's cross compilers and qemu-user (tools/cross/*.sh install them when run as root); skips
with the reason otherwise. The first run builds ncnn for each target (minutes, cached in
~/.cache/edgesdk/ncnn); later runs rebuild only what changed in build/cross-<arch>.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from tools import models

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CROSS = ROOT / "tools" / "cross"
TARGETS = {  # arch -> (compiler triple, qemu, ELF e_machine, emulated core as in tools/cross/lib.sh)
    "aarch64": ("aarch64-linux-gnu", "qemu-aarch64", 183, "cortex-a76"),
    "armv7": ("arm-linux-gnueabihf", "qemu-arm", 40, "cortex-a7"),
}
# Engine threads under emulation: each is a host thread, and OpenMP's spinning on a busy 2-core
# machine makes the bundle's 4 slower than 2.
THREADS = "2"
BUILD_TIMEOUT = 3600  # a first build compiles ncnn for the target
RUN_TIMEOUT = 900


def _missing(arch: str) -> str | None:
    triple, qemu, _, _ = TARGETS[arch]
    tools = [f"{triple}-g++", qemu, "cmake", "ninja"]
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        return (f"cross tools for {arch} missing: {', '.join(absent)} "
                f"(apt-get install g++-{triple} qemu-user cmake ninja-build, or run tools/cross/build-runtime.sh as root)")
    return None


def _build(arch: str) -> Path:
    reason = _missing(arch)
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([str(CROSS / "build-runtime.sh"), arch], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, f"cross build for {arch} failed:\n{proc.stderr[-4000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def aarch64_build() -> Path:
    return _build("aarch64")


@pytest.fixture(scope="module")
def armv7_build() -> Path:
    return _build("armv7")


def _qemu(arch: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    triple, qemu, _, cpu = TARGETS[arch]
    proc = subprocess.run([qemu, "-cpu", cpu, "-L", f"/usr/{triple}", *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    if check:
        assert proc.returncode == 0, f"{args[0]} under {qemu} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


@pytest.fixture(scope="module")
def rpi5_bundle(tmp_path_factory) -> Path:
    """EfficientNet-Lite0 packaged for the Raspberry Pi 5 profile (ncnn, fp16 storage) on this machine."""
    out = tmp_path_factory.mktemp("cross") / "rpi5"
    edgesdk.package(models.efficientnet_lite0(), "rpi5", out, calib=models.calibration_images()[:4])
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[tuple[Path, np.ndarray]]:
    """Three real evaluation photos as binary PPM (exact pixels on both sides) with their BGR frames."""
    d = tmp_path_factory.mktemp("photos")
    out = []
    for src in models.eval_images()[:3]:
        bgr = models.read_bgr(src)
        h, w = bgr.shape[:2]
        p = d / (src.stem + ".ppm")
        p.write_bytes(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(bgr[:, :, ::-1]).tobytes())
        out.append((p, bgr))
    return out


@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
def test_cpp_tests_pass_under_qemu(arch, request):
    build = request.getfixturevalue(f"{arch}_build")
    for exe in ("edgesdk_tests", "edgesdk_preprocess_tests", "edgesdk_engine_tests", "edgesdk_bundle_tests"):
        assert _elf_machine(build / "native" / exe) == TARGETS[arch][2], f"{exe} is not an {arch} program"
    proc = subprocess.run([str(CROSS / "test-qemu.sh"), arch], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          env={**os.environ, "EDGESDK_CROSS_BUILD": str(build)})
    assert proc.returncode == 0, f"ctest under qemu for {arch} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert "100% tests passed" in proc.stdout
    # ctest hides passing tests' output: ask the programs which kernels and engines they ran.
    assert f"arch={arch} kernels=neon" in _qemu(arch, build / "native" / "edgesdk_tests").stdout
    assert "preprocess kernels=neon, 0 failed" in _qemu(arch, build / "native" / "edgesdk_preprocess_tests").stdout
    assert "ncnn: not built" not in _qemu(arch, build / "native" / "edgesdk_engine_tests").stdout


def _run_json(arch: str, build: Path, bundle: Path, image: Path) -> dict:
    proc = _qemu(arch, build / "install" / "bin" / "edgesdk-run", bundle, image, "--json", "--repeat", "1", "--threads", THREADS)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
def test_edgesdk_run_matches_x86(arch, request, rpi5_bundle, photos):
    """The same bundle and pixels: the board build under qemu (ncnn's ARM kernels, NEON preprocessing;
    fp16 activations on the Cortex-A76) against edgesdk.load on this x86 machine."""
    build = request.getfixturevalue(f"{arch}_build")
    exe = build / "install" / "bin" / "edgesdk-run"
    assert _elf_machine(exe) == TARGETS[arch][2]
    with edgesdk.load(rpi5_bundle) as model:
        for ppm, bgr in photos:
            ref = model(bgr)
            got = _run_json(arch, build, rpi5_bundle, ppm)
            assert got["arch"] == arch and got["kernels"] == "neon" and got["backend"] == "ncnn"
            out = got["outputs"]["logits"]
            assert out["shape"] == [1, 1000]
            a = np.asarray(out["data"], np.float64)
            r = ref["logits"].astype(np.float64).reshape(-1)
            cosine = float(a @ r / np.linalg.norm(a) / np.linalg.norm(r))
            max_abs = float(np.abs(a - r).max())
            # measured: aarch64 max_abs <= 0.017 (fp16 activations), armv7 <= 1e-5; logits span about -4..12
            assert cosine >= 0.9999 and max_abs <= 0.04, f"{arch} {ppm.name}: cosine {cosine:.6f}, max_abs {max_abs:.4f}"
            assert got["topk"][0]["index"] == ref["topk"][0]["index"], f"{arch} {ppm.name}: top-1 differs"
            assert got["topk"][0]["label"] == ref["topk"][0]["label"]
            assert abs(got["topk"][0]["score"] - ref["topk"][0]["score"]) <= 2e-3


def test_golden_check_under_qemu(aarch64_build, armv7_build, rpi5_bundle):
    """Each board build replays the bundle's golden inputs against the ONNX Runtime outputs stored in it."""
    for arch, build in (("aarch64", aarch64_build), ("armv7", armv7_build)):
        proc = _qemu(arch, build / "install" / "bin" / "edgesdk-run", rpi5_bundle, "--check", "--threads", THREADS)
        assert "golden check (min cosine 0.9990, same top-1): passed" in proc.stdout, proc.stdout
        assert proc.stdout.count(" ok\n") == 3


def test_edgesdk_run_refuses_modified_bundle(aarch64_build, rpi5_bundle, photos, tmp_path):
    bad = tmp_path / "bundle"
    shutil.copytree(rpi5_bundle, bad)
    weights = bad / "model" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x40
    weights.write_bytes(bytes(data))
    exe = aarch64_build / "install" / "bin" / "edgesdk-run"
    proc = _qemu("aarch64", exe, bad, photos[0][0], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"edgesdk-run: {bad}: file model/model.bin does not match its sha256 in the manifest (modified or corrupt)"
    proc = _qemu("aarch64", exe, rpi5_bundle, tmp_path / "missing.ppm", check=False)
    assert proc.returncode == 2 and "missing.ppm: cannot open" in proc.stderr


def test_aarch64_wheel_under_qemu(aarch64_build, rpi5_bundle, photos, tmp_path):
    """The cross-built wheel imported by Debian's own aarch64 Python 3 under qemu: NEON preprocessing
    against the numpy reference, then edgesdk.load on the bundle gives the x86 top-1."""
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    if "arm64" not in foreign and os.geteuid() != 0:
        pytest.skip("Debian's arm64 package lists are not set up (sudo dpkg --add-architecture arm64 && sudo apt-get update)")
    proc = subprocess.run([str(CROSS / "build-wheel.sh"), "aarch64", str(tmp_path / "dist")], capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stderr[-4000:]}"
    wheel = Path(proc.stdout.strip().splitlines()[-1])
    assert wheel.name == f"edgesdk-{edgesdk.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}-cp{sys.version_info[0]}{sys.version_info[1]}-linux_aarch64.whl"
    ppm, bgr = photos[0]
    frame = tmp_path / "frame.npy"
    np.save(frame, bgr)
    proc = subprocess.run([str(CROSS / "test-wheel.sh"), str(wheel), str(rpi5_bundle), str(frame)], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, f"wheel under qemu failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["python"].split()[1:] == ["arch", "aarch64", "kernels", "neon", "engines", "['ncnn']"], proc.stdout
    assert float(lines["preprocess"].split()[-1]) <= 1e-5
    with edgesdk.load(rpi5_bundle) as model:
        want = model(bgr)["topk"][0]
    assert int(lines["top1"].split()[0]) == want["index"], proc.stdout
