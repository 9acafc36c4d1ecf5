"""Concurrency and leaks on real EfficientNet-Lite0 bundles for ONNX Runtime, OpenVINO and ncnn as
edgesdk.load opens them (OpenVINO and ncnn on the native engines): one Model called from 8 threads x
1000 times gives exactly the sequential outputs (and outputs handed out earlier are never overwritten
by later runs); Model.stream(workers=4) too; resident memory after 10,000 calls stays within 5% of
the memory after 1,000. The engines' Python sessions (load(native=False)) get the stream test always
and the 8 x 1000 and 10,000-call tests with EDGESDK_STRESS=1 (they double the ~5 minutes these take
on 2 cores)."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk.backends.base import Artifact
from edgesdk.device.bundle import MODEL_DIR, read_manifest
from edgesdk.device.preprocess import read_image
from edgesdk.device.runtime import NativeSession

THREADS, CALLS = 8, 1000
RSS_FIRST, RSS_TOTAL, RSS_GROWTH = 1000, 10000, 1.05

# (profile, native): native=None is what edgesdk.load does by default; False forces the Python session.
DEFAULT_PATHS = {"onnxruntime": ("x86-onnxruntime", None), "openvino-native": ("x86-openvino", None),
                 "ncnn-native": ("rpi5", None)}
PYTHON_PATHS = {"openvino-python": ("x86-openvino", False), "ncnn-python": ("rpi5", False)}
ALL_PATHS = [pytest.param(*p, id=name) for name, p in {**DEFAULT_PATHS, **PYTHON_PATHS}.items()]
STRESS_PATHS = [pytest.param(*p, id=name) for name, p in DEFAULT_PATHS.items()] + [
    pytest.param(*p, id=name, marks=pytest.mark.skipif(os.environ.get("EDGESDK_STRESS") != "1",
                                                       reason="the Python sessions' stress runs need EDGESDK_STRESS=1"))
    for name, p in PYTHON_PATHS.items()]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, effnet_onnx, calib_images):
    root = tmp_path_factory.mktemp("concurrency-bundles")
    targets = sorted({t for t, _ in [*DEFAULT_PATHS.values(), *PYTHON_PATHS.values()]})
    return {t: edgesdk.package(effnet_onnx, t, root / t, calib=calib_images[:6]).out for t in targets}


@pytest.fixture(scope="module")
def frame_paths(eval_images):
    return eval_images[:8]  # real photos of different sizes: every call resizes differently


@pytest.fixture(scope="module")
def frames(frame_paths):
    return [read_image(p) for p in frame_paths]


def _threads(bundle) -> int | None:
    """The bundle's engine threads, at most this machine's cores: rpi5's 4 ncnn threads on a 2-core
    machine spin in OpenMP barriers (3x the time per call) and test nothing more."""
    threads = read_manifest(bundle).get("threads") or None
    return min(threads, os.cpu_count() or 1) if threads else None


def _runs_native(bundle, native) -> bool:
    """Whether load(native=...) must run the native engine: by default wherever it can."""
    return NativeSession.unavailable(Artifact.load(bundle / MODEL_DIR)) is None if native is None else native


def _open(bundles, target, native):
    """The model on the path asked for (checked: a silent fallback would test another path)."""
    model = edgesdk.load(bundles[target], native=native, threads=_threads(bundles[target]))
    if model.native != _runs_native(bundles[target], native):
        model.close()
        pytest.fail(f"{target}: load(native={native}) ran native={model.native}")
    return model


def _sequential(model, frames):
    want = [model(f)["logits"].copy() for f in frames]
    # distinct frames give distinct outputs, so a frame answered with another's result is caught
    for i in range(len(want)):
        for j in range(i):
            assert not np.array_equal(want[i], want[j]), (i, j)
    return want


@pytest.mark.slow
@pytest.mark.parametrize("target,native", STRESS_PATHS)
def test_eight_threads_times_1000_calls_equal_sequential(bundles, frames, target, native):
    with _open(bundles, target, native) as model:
        want = _sequential(model, frames)
        got = [[None] * CALLS for _ in range(THREADS)]
        errors = []
        start = threading.Barrier(THREADS)

        def worker(t):
            try:
                start.wait()
                for k in range(CALLS):
                    got[t][k] = model(frames[(t + k) % len(frames)])["logits"]
            except Exception as e:  # noqa: BLE001 - reported below with its thread
                errors.append((t, repr(e)))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors[:3]
        # compared after all runs: an output over engine memory that a later run reused would differ now
        bad = [(t, k, float(np.abs(got[t][k] - want[(t + k) % len(frames)]).max()))
               for t in range(THREADS) for k in range(CALLS)
               if not np.array_equal(got[t][k], want[(t + k) % len(frames)])]
        assert not bad, (f"{len(bad)} of {THREADS * CALLS} outputs differ from sequential "
                         f"(thread, call, max abs): {bad[:5]}")


@pytest.mark.slow
@pytest.mark.parametrize("target,native", ALL_PATHS)
def test_stream_four_workers_equals_sequential(bundles, frames, target, native):
    with _open(bundles, target, native) as model:
        want = _sequential(model, frames)
        order = [(k * 5) % len(frames) for k in range(25 * len(frames))]  # every frame, shuffled order
        got = [r["logits"] for r in model.stream((frames[i] for i in order), workers=4)]
        assert len(got) == len(order)
        bad = [(k, float(np.abs(g - want[i]).max())) for k, (g, i) in enumerate(zip(got, order))
               if not np.array_equal(g, want[i])]
        assert not bad, f"{len(bad)} of {len(order)} stream results differ (position, max abs): {bad[:5]}"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc (Linux)")
@pytest.mark.parametrize("target,native", STRESS_PATHS)
def test_rss_flat_from_1000_to_10000_calls(bundles, frame_paths, target, native):
    probe = Path(__file__).with_name("rss_probe.py")
    flag = {None: "auto", True: "yes", False: "no"}[native]
    threads = _threads(bundles[target])
    proc = subprocess.run([sys.executable, str(probe), str(bundles[target]), *map(str, frame_paths),
                           "--native", flag, "--first", str(RSS_FIRST), "--total", str(RSS_TOTAL),
                           *(["--threads", str(threads)] if threads else [])],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["total"] == RSS_TOTAL and r["native"] == _runs_native(bundles[target], native)
    mib = 1 << 20
    assert r["rss_total"] <= RSS_GROWTH * r["rss_first"], (
        f"RSS grew from {r['rss_first'] / mib:.1f} MiB after {RSS_FIRST} calls to "
        f"{r['rss_total'] / mib:.1f} MiB after {RSS_TOTAL}")
