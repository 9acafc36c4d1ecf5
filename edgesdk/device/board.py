"""What board this is, read from files alone (no engine imported): the device tree's model (Jetson,
Raspberry Pi, Rockchip), Jetson's L4T release and the JetPack it belongs to, the CUDA, cuDNN and
TensorRT versions JetPack installs, and the CPU features the engines' kernels use (/proc/cpuinfo)."""
from __future__ import annotations

import platform as _platform  # the standard library's
import re
from pathlib import Path

# L4T release (major, minor) -> JetPack (NVIDIA's JetPack archive / L4T release notes).
JETPACK = {(36, 4): "6.1/6.2", (36, 3): "6.0", (36, 2): "6.0 DP", (35, 6): "5.1.4", (35, 5): "5.1.3",
           (35, 4): "5.1.2", (35, 3): "5.1.1", (35, 2): "5.1", (35, 1): "5.0.2", (32, 7): "4.6.x"}
# Flag names as /proc/cpuinfo spells them (x86 "flags", Arm "Features") -> what doctor reports.
CPU_FEATURES = {
    "neon": ("neon", "asimd"),  # armv7 says neon, aarch64 asimd (Advanced SIMD is NEON)
    "dotprod": ("asimddp",),
    "i8mm": ("i8mm",),
    "fp16": ("fphp", "asimdhp"),
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "bf16": ("avx512_bf16", "amx_bf16", "bf16"),
    "vnni": ("avx512_vnni", "avx_vnni"),
}


def read_text(path: str | Path) -> str | None:
    try:
        return Path(path).read_bytes().replace(b"\0", b"\n").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def cpu_features(cpuinfo: str) -> dict[str, bool]:
    """The CPU_FEATURES found in the text of /proc/cpuinfo (the first flags/Features line)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            break
    return {name: any(f in flags for f in names) for name, names in CPU_FEATURES.items()}


def cpu_model(cpuinfo: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
            return value.strip()
    return None


def l4t_release(text: str) -> str | None:
    """'36.4.0' from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.0, GCID: ...')."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack(l4t: str | None) -> str | None:
    if not l4t:
        return None
    major, minor = (int(p) for p in l4t.split(".")[:2])
    return JETPACK.get((major, minor))


def board_kind(model: str | None, compatible: str | None) -> str | None:
    text = f"{model or ''}\n{compatible or ''}".lower()
    for kind, words in (("jetson", ("jetson", "nvidia,tegra")), ("raspberry-pi", ("raspberry pi", "raspberrypi")),
                        ("rockchip", ("rockchip",))):
        if any(w in text for w in words):
            return kind
    return None


def _header_version(paths, names) -> str | None:
    """'9.3.0' from #define NAME_MAJOR/MINOR/PATCH lines of the first header that has them."""
    for path in paths:
        text = read_text(path)
        if not text:
            continue
        parts = [re.search(rf"#define\s+{n}\s+(\d+)", text) for n in names]
        if all(parts):
            return ".".join(p.group(1) for p in parts)
    return None


def cuda_version(root: str = "/usr/local/cuda") -> str | None:
    """The CUDA toolkit's version: version.json (CUDA >= 11.1), else version.txt."""
    import json

    text = read_text(Path(root) / "version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    m = re.search(r"CUDA Version\s+([\d.]+)", read_text(Path(root) / "version.txt") or "")
    return m.group(1) if m else None


def _dist_version(*names: str) -> str | None:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def detect() -> dict:
    """The platform as doctor reports it: stable keys, None where a thing is not there."""
    cpuinfo = read_text("/proc/cpuinfo") or ""
    model = read_text("/proc/device-tree/model")
    compatible = read_text("/proc/device-tree/compatible")
    kind = board_kind(model, compatible)
    l4t = l4t_release(read_text("/etc/nv_tegra_release") or "")
    incl = ["/usr/include", "/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu",
            "/usr/local/cuda/include"]
    return {
        "system": _platform.system(),
        "machine": _platform.machine(),
        "python": _platform.python_version(),
        "board": {"kind": kind, "model": model, "compatible": compatible.split("\n") if compatible else []},
        "jetson": {
            "l4t": l4t,
            "jetpack": jetpack(l4t),
            "cuda": cuda_version(),
            "cudnn": _header_version([f"{d}/cudnn_version.h" for d in incl], ("CUDNN_MAJOR", "CUDNN_MINOR",
                                                                                 "CUDNN_PATCHLEVEL")),
            "tensorrt": _dist_version("tensorrt", "tensorrt-cu12", "tensorrt_cu12") or _header_version(
                [f"{d}/NvInferVersion.h" for d in incl],
                ("NV_TENSORRT_MAJOR", "NV_TENSORRT_MINOR", "NV_TENSORRT_PATCH")),
        },
        "cpu": {"model": cpu_model(cpuinfo), "cores": _cores(), "features": cpu_features(cpuinfo)},
    }


def _cores() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
