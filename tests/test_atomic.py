"""Nothing lost or half-written: processes killed (SIGKILL) at random points while they write a bundle
or an engine plan cache leave the old state or the new one, never a mix.

CI runs a few kills per writer; EDGESDK_KILL_ITERATIONS (e.g. 100) runs a longer loop by hand, and
EDGESDK_KILL_SEED replays one. The seed is in every failure message.
"""
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import edgesdk
from edgesdk.atomic import clean_leftovers
from edgesdk.backends.tensorrt.config import BuildConfig
from edgesdk.backends.tensorrt.plan_cache import cached_plan, plan_key
from edgesdk.device.bundle import MANIFEST

ITERATIONS = int(os.environ.get("EDGESDK_KILL_ITERATIONS", "8"))
SEED = int(os.environ.get("EDGESDK_KILL_SEED", str(random.SystemRandom().randrange(1 << 30))))
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def leftover_pattern(name: str) -> re.Pattern:
    """The hidden names edgesdk.atomic gives its temp files and directories beside `name`."""
    return re.compile(rf"\.{re.escape(name)}\.\d+-[0-9a-f]{{12}}\.(tmp|old)")


def sigkill_after(cmd: list[str], delay: float, **kw) -> int:
    """Run `cmd`, SIGKILL it `delay` seconds after the start (unless it ended first); its return code."""
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=kw.pop("env", ENV),
                          **kw) as proc:
        try:
            _, err = proc.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode(errors="replace")[-2000:]
    return proc.returncode


# ---------------------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, calib_images):
    d = tmp_path_factory.mktemp("calib")
    for p in calib_images[:3]:
        shutil.copy(p, d / p.name)
    return d


def check_bundle(path: Path) -> bytes:
    """The bundle's manifest, after checking it loads (every sha256) and replays its golden samples."""
    with edgesdk.load(path) as model:
        report = model.check()
        assert report.passed, report.summary()
    return (path / MANIFEST).read_bytes()


def tar_manifest(tar: Path) -> bytes:
    """The manifest inside a bundle archive, after reading every member to the end (a torn archive fails)."""
    manifest = None
    with tarfile.open(tar) as tf:
        for m in tf.getmembers():
            if m.isfile():
                data = tf.extractfile(m).read()
                assert len(data) == m.size
                if m.name == f"{tar.name[:-len('.tar.gz')]}/{MANIFEST}":
                    manifest = data
    assert manifest is not None, f"{tar}: no {MANIFEST}"
    return manifest


@pytest.mark.slow
def test_package_killed_at_random_points_leaves_old_or_new_bundle(tmp_path, effnet_onnx, calib_dir):
    parent = tmp_path / "bundles"
    out = parent / "effnet"
    cmd = [sys.executable, "-m", "edgesdk", "package", str(effnet_onnx), "--target", "x86-onnxruntime",
           "--out", str(out), "--calib", str(calib_dir), "--tar"]
    work = tmp_path / "tmp"  # the pipeline's scratch files (system temp dir) of killed runs land here
    work.mkdir()
    env = dict(ENV, TMPDIR=str(work))

    t = time.perf_counter()
    assert sigkill_after(cmd, 600, env=env) == 0
    full = time.perf_counter() - t
    current = check_bundle(out)
    tar = parent / "effnet.tar.gz"
    assert tar_manifest(tar) == current
    seen = {current}
    rng = random.Random(SEED)
    outcomes = []
    for i in range(ITERATIONS):
        delay = rng.uniform(0, full)
        code = sigkill_after(cmd, delay, env=env)
        where = f"seed {SEED}, iteration {i}, killed after {delay:.2f} s of a {full:.2f} s run (exit {code})"
        visible = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))
        hidden = [p.name for p in parent.iterdir() if p.name.startswith(".")]
        assert visible == ["effnet", "effnet.tar.gz"], where  # an old bundle is never lost, not even for a moment
        assert all(leftover_pattern("effnet").fullmatch(h) or leftover_pattern(tar.name).fullmatch(h)
                   for h in hidden), (hidden, where)
        manifest = check_bundle(out)
        seen.add(manifest)
        assert tar_manifest(tar) in seen, where  # the archive is whole, of this bundle or an earlier one
        if manifest == current:
            assert code != 0, f"a run that finished left the old bundle; {where}"
            outcomes.append("old")
        else:  # complete: check_bundle verified every file's sha256 and replayed the golden samples
            outcomes.append("new" if code else "finished")
            current = manifest
    print(f"kills: {outcomes} (seed {SEED}, full run {full:.2f} s); scratch dirs left in the system temp dir "
          f"by killed runs: {len(list(work.iterdir()))}")
    assert outcomes.count("old") + outcomes.count("new") >= ITERATIONS // 2  # most runs were really killed

    # the next run cleans what the killed ones left beside the bundle
    assert sigkill_after(cmd, 600, env=env) == 0
    assert sorted(p.name for p in parent.iterdir()) == ["effnet", "effnet.tar.gz"]
    assert tar_manifest(tar) == check_bundle(out)


KILLED_IN_THE_SWAP = """
import os, signal, sys
from pathlib import Path
from edgesdk import atomic

atomic._exchange = lambda a, b: False  # a file system without renameat2's atomic exchange
rename = os.replace

def replace(src, dst):
    rename(src, dst)
    if str(dst).endswith(".old"):  # the old bundle moved aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)

atomic.os.replace = replace
with atomic.staged_dir(sys.argv[1]) as stage:
    (stage / "manifest.json").write_text("new")
"""


def test_fallback_swap_killed_between_renames_is_restored(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    res = subprocess.run([sys.executable, "-c", KILLED_IN_THE_SWAP, str(out)], env=ENV, capture_output=True)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not out.exists()
    kinds = sorted(p.name.rsplit(".", 1)[1] for p in tmp_path.iterdir())
    assert kinds == ["old", "tmp"]  # the complete old copy and the staged new one, both hidden
    clean_leftovers(out)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert (out / "manifest.json").read_text() == "old"


def test_leftovers_of_a_live_writer_are_kept(tmp_path):
    out = tmp_path / "bundle"
    mine = tmp_path / f".bundle.{os.getpid()}-0123456789ab.tmp"  # this process is still writing it
    mine.mkdir()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        theirs = tmp_path / f".bundle.{other.pid}-0123456789ab.tmp"
        theirs.mkdir()
        clean_leftovers(out)
        assert mine.exists() and theirs.exists()
        other.kill()
    clean_leftovers(out)
    assert mine.exists() and not theirs.exists()


# ---------------------------------------------------------------------------- TensorRT plan cache

PLAN_WRITER = """
import hashlib, sys
from pathlib import Path
from edgesdk.backends.tensorrt.config import BuildConfig
from edgesdk.backends.tensorrt.plan_cache import plan_key, store_plan

engines, size = Path(sys.argv[1]), int(sys.argv[2])
config = BuildConfig(precision="fp16", onnx_sha256="0" * 64)
key = plan_key(config, "10.3.0", (8, 7))
gen = int(sys.argv[3])
while True:
    gen += 1
    head = gen.to_bytes(8, "little")
    body = hashlib.sha256(head).digest() * (size // 32)
    store_plan(engines / key.filename, head + body, key, config)
"""


def plan_generation(data: bytes) -> int | None:
    """The writer's generation number if `data` is one of its plans, whole; else None."""
    head, body = data[:8], data[8:]
    return int.from_bytes(head, "little") if body == hashlib.sha256(head).digest() * (len(body) // 32) else None


@pytest.mark.slow
def test_plan_cache_killed_at_random_points_is_old_or_new(tmp_path):
    engines = tmp_path / "engines"
    key = plan_key(BuildConfig(precision="fp16", onnx_sha256="0" * 64), "10.3.0", (8, 7))
    size = 16 << 20  # a small real plan; big enough that a kill often lands inside a write
    rng = random.Random(SEED + 1)
    outcomes, last = [], 0
    for i in range(ITERATIONS):
        delay = rng.uniform(0.3, 2.0)  # the interpreter starts in ~0.3 s, then it writes plans in a loop
        code = sigkill_after([sys.executable, "-c", PLAN_WRITER, str(engines), str(size), str(last)], delay)
        where = f"seed {SEED + 1}, iteration {i}, killed after {delay:.2f} s (exit {code})"
        assert code == -signal.SIGKILL, where
        plan, reason = cached_plan(engines, key)
        if reason is None:  # trusted: a whole plan, and the very one its sidecar describes
            gen = plan_generation(plan.read_bytes())
            assert gen is not None and gen >= last, where
            outcomes.append("loadable")
            last = gen
        elif "does not match the sha256" in reason:  # a new plan beside the old sidecar: rebuilt, never loaded
            outcomes.append("torn pair refused")
        else:
            assert reason in ("not built yet", "no sidecar"), (reason, where)  # killed before the first pair
            outcomes.append(reason)
        pair = (plan.name, plan.with_suffix(".json").name)
        for name in (p.name for p in engines.glob("*")):
            assert name in pair or any(leftover_pattern(n).fullmatch(name) for n in pair), (name, where)
    print(f"plan cache after kills: {outcomes} (seed {SEED + 1})")
    assert "loadable" in outcomes

    # A writer that ends normally leaves the pair and nothing else (killed writers' temp files go).
    code = subprocess.run([sys.executable, "-c", PLAN_WRITER.replace("while True:", "for _ in range(1):"),
                           str(engines), str(size), str(last)], env=ENV).returncode
    assert code == 0
    assert sorted(p.name for p in engines.iterdir()) == sorted([key.filename, Path(key.filename).stem + ".json"])
    assert cached_plan(engines, key)[1] is None
