"""edgesdk tune: candidates packaged and gated, timed here, the winner written with its profile, Pareto table and
runtime sidecar; --runtime-only writes the sidecar load() reads. Small budgets keep these short: the speed
claims live in benchmarks/bench_tune.py."""
import json
import os

import pytest

from edgesdk.cli import main
from edgesdk.errors import BundleError


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesdk: error:"), err
    return err[0]


@pytest.mark.parametrize("extra, says", [
    (["--objective", "fastest"], "invalid choice: 'fastest'"),
    (["--minutes", "0"], "--minutes must be a number > 0"),
    (["--minutes", "-2"], "--minutes must be a number > 0"),
    ([], "tune needs --calib DIR"),
])
def test_bad_input_exits_2_with_one_line(effnet_onnx, tmp_path, capsys, extra, says):
    assert main(["tune", str(effnet_onnx), "--out", str(tmp_path / "o"), *extra]) == 2
    assert says in _err_line(capsys)
    assert not (tmp_path / "o").exists()


def test_missing_calib_folder_is_named(effnet_onnx, tmp_path, capsys):
    assert main(["tune", str(effnet_onnx), "--out", str(tmp_path / "o"), "--calib", str(tmp_path / "nope")]) == 2
    assert str(tmp_path / "nope") in _err_line(capsys)


def test_runtime_only_on_a_model_file_is_refused(effnet_onnx, capsys):
    assert main(["tune", str(effnet_onnx), "--runtime-only"]) == 2
    line = _err_line(capsys)
    assert str(effnet_onnx) in line and "bundle" in line


@pytest.fixture(scope="module")
def ort_bundle(tmp_path_factory, effnet_onnx, calib_images):
    import edgesdk

    out = tmp_path_factory.mktemp("tune") / "ort"
    edgesdk.package(effnet_onnx, "x86-onnxruntime", out, calib=calib_images[:4])
    return out


@pytest.mark.slow
def test_runtime_only_sidecar_round_trip(ort_bundle, capsys):
    from edgesdk.device.bundle import read_manifest
    from edgesdk.device.runtime import load
    from edgesdk.device.tuning import SIDECAR, cores, fits

    assert main(["tune", str(ort_bundle), "--runtime-only", "--minutes", "0.5", "--rounds", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    s = r["settings"]
    assert r["sidecar"] == str(ort_bundle / SIDECAR) and r["table"]
    assert any("OpenMP wait policy: not tried" in n for n in r["notes"])  # onnxruntime has its own thread pool
    # the winner is the best row of the table for the objective, on its worst round
    assert s["measured"]["rank_ms"] == pytest.approx(min(x["rank_ms"] for x in r["table"]), abs=1e-3)
    assert "worst round" in r["rank_by"] and all(
        fits(x["threads"], x["workers"], cores(), x["native"]) for x in r["table"] if x["threads"])
    assert SIDECAR not in read_manifest(ort_bundle)["files"]  # the device may rewrite it: not hashed, still verified
    with load(ort_bundle) as m:
        assert m.tuning["workers"] == s["workers"] == m.workers
        assert m.threads == s["threads"]
    with load(ort_bundle, threads=1, tuning=False) as m:  # the caller's own values win
        assert m.threads == 1 and m.tuning is None and m.workers == 2
    (ort_bundle / SIDECAR).write_text(json.dumps({"schema": 1, "threads": "four"}))
    with pytest.raises(BundleError, match="tuning.json: threads = 'four'"):
        load(ort_bundle)
    (ort_bundle / SIDECAR).unlink()


def test_omp_policy_applies_only_before_openmp_loads(monkeypatch):
    from edgesdk.device import tuning

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(tuning, "openmp_loaded", lambda: True)
    assert "already loaded" in tuning.apply_omp_policy("PASSIVE")
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(tuning, "openmp_loaded", lambda: False)
    assert tuning.apply_omp_policy("PASSIVE") is None and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "from the environment kept" in tuning.apply_omp_policy("PASSIVE")


def test_plan_reads_the_cpu_flags():
    from edgesdk.build.tune import plan

    bare, skipped = plan({}, "openvino", flags={"avx2", "f16c"})
    assert {c.label for c in bare} == {"fp32", "int8"}
    assert any("no fp16 arithmetic" in s for s in skipped) and any("no bf16" in s for s in skipped)
    rich, _ = plan({}, "openvino", flags={"avx512_bf16", "avx512_fp16"})
    labels = {c.name for c in rich}
    assert "openvino-bf16" in labels and "openvino-fp16" in labels and "ncnn-fp16" in labels
    assert [c.precision for c in rich][-1] == "int8"  # int8 (the slow builds) last


@pytest.mark.slow
def test_tune_efficientnet_writes_a_reproducible_winner(effnet_onnx, calib_dir, tmp_path, capsys):
    from edgesdk.build.targets import load_target
    from edgesdk.build.tune_report import TWIN_TIE
    from edgesdk.device.bundle import read_manifest
    from edgesdk.device.runtime import load
    from edgesdk.device.tuning import cores, fits, oversubscribed

    out = tmp_path / "tuned"
    assert main(["tune", str(effnet_onnx), "--calib", str(calib_dir), "--out", str(out), "--minutes", "1.5",
                 "--rounds", "1", "--objective", "throughput", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    rows, w = r["candidates"], r["winner"]
    ranked = [x for x in rows if "throughput" not in x["defers_to_native"]]
    assert w["rank_fps"] == max(x["rank_fps"] for x in ranked)  # the objective decides, on the worst round
    for x in rows:  # a Python row leaves the ranking only to its native twin, and only within TWIN_TIE of it
        if x["defers_to_native"]:
            twin = next(t for t in rows if t["native"] and
                        all(t[k] == x[k] for k in ("candidate", "threads", "workers")))
            assert not x["native"] and x["rank_fps"] <= twin["rank_fps"] * (1 + TWIN_TIE)
    assert "worst round" in r["rank_by"] and 1 <= r["free_cores"] <= r["cores"]
    for x in rows:  # within this process's cores; over the ones others left free: marked
        assert fits(x["threads"], x["workers"], cores(), x["native"])
        assert x["over_free_cores"] == oversubscribed(x["threads"], x["workers"], x["native"],
                                                      r["load"]["others_cores_before"], x["others_cores_peak"])
        assert x["rank_ms"] == pytest.approx(max(x["p50_rounds_ms"]), abs=1e-3) and x["accuracy"] >= 0.999
    assert all(x["cosine_min"] >= 0.999 for x in rows)  # every timed candidate passed its gate
    for f in r["failed"]:  # a half-width compute failing its gate says so, not only the fp32 weights it holds
        half = f["candidate"] in ("openvino-bf16", "openvino-fp16")
        assert not half or f["why"].startswith("fp32 weights computing in")
    assert r["pareto"]["throughput"] and r["winner_index"] in r["pareto"]["throughput"]
    if r["stopped_early"]:  # a minute and a half leaves out int8 builds: said so, by name
        assert any("time budget" in s for s in r["skipped"])
    manifest = read_manifest(out)  # hashes hold after tune added its files
    assert {"tuned.toml", "tune.json", "report.md"} <= set(manifest["files"])
    assert "Tuned on this machine" in (out / "report.md").read_text()
    assert json.loads((out / "tune.json").read_text())["winner"]["candidate"] == w["candidate"]
    profile = load_target(out / "tuned.toml")
    assert (profile.engine, profile.streams) == (w["engine"], w["workers"])
    assert profile.precision == manifest["precision"] and manifest["target"]["name"] == profile.name
    with load(out) as m:
        assert (m.backend, m.workers, m.native) == (w["engine"], w["workers"], w["native"])
        assert m.threads == w["threads"]


def test_rounds_past_the_deadline_still_time_one_configuration():
    """Builds that used up --minutes leave one measured configuration (and a summary saying the rounds
    were cut), not an empty result."""
    import time

    from edgesdk.device.tuning import time_rounds

    calls = []

    def run(unit, first):
        calls.append(unit)
        return {1: {"loaded": False, "others": 0.0, "loadavg": 0.0, "p50_ms": 1.0, "fps": 1.0}}

    timed, done = time_rounds(["a", "b", "c"], run, rounds=3, deadline=time.monotonic() - 1)
    assert calls == ["a"] and done == 0
    assert len(timed[0].rounds[1]) == 1 and not timed[1].rounds and not timed[2].rounds


def _rounds(p50s: dict, loaded: dict | None = None):
    """Synthetic round timings through the real interleaved timer: unit -> per-round p50 ms."""
    import time

    from edgesdk.device.tuning import time_rounds

    seq = {u: iter(v) for u, v in p50s.items()}

    def run(unit, first):
        ms = next(seq[unit])
        busy = bool(loaded and ms in loaded.get(unit, ()))
        return {1: {"loaded": busy, "others": 1.5 if busy else 0.0, "loadavg": 0.0, "p50_ms": ms, "fps": 1000.0 / ms}}

    units = list(p50s)
    timed, done = time_rounds(units, run, rounds=3, deadline=time.monotonic() + 600)
    return units, timed, done


def _row(name, s, workers=1):
    return {"candidate": name, "native": True, "threads": 1, "workers": workers, "cosine_min": 1.0,
            "accuracy": 1.0, "near_zero": 0, **s}


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_ranking_prefers_the_configuration_fast_in_every_round(objective):
    """A configuration fast in two quiet rounds and 3x slower in the third (ncnn's OpenMP threads on a
    machine that woke up) loses to one steady in all three, though its median is better."""
    from edgesdk.build.tune import _choose

    units, timed, done = _rounds({"quiet-moment": [5.0, 5.0, 15.0], "steady": [8.0, 8.0, 8.0]})
    assert done == 3
    rows = [_row(u, timed[i].summary(1)) for i, u in enumerate(units)]
    quiet, steady = rows
    assert quiet["p50_ms"] < steady["p50_ms"] and quiet["fps"] > steady["fps"]  # the median would pick it
    assert (quiet["rank_ms"], steady["rank_ms"]) == (15.0, 8.0)
    assert quiet["rank_fps"] < steady["rank_fps"]
    result = _choose(rows, objective)
    assert result["winner"]["candidate"] == "steady"
    front = result["pareto"][objective]
    assert [rows[i]["candidate"] for i in front] == ["steady"]


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_the_python_session_wins_over_its_native_twin_only_by_more_than_the_tie(objective):
    """The same candidate, threads and workers through the Python and the native session: 5% apart is the
    run's noise and the native row ranks (winner and front agree); 20% apart, the Python row wins."""
    from edgesdk.build.tune import _choose
    from edgesdk.build.tune_report import TWIN_TIE

    def rows(python_ms):
        units, timed, _ = _rounds({"native": [10.0] * 3, "python": [python_ms] * 3, "other": [12.0] * 3})
        out = [_row("openvino-fp32", timed[0].summary(1)), {**_row("openvino-fp32", timed[1].summary(1)), "native": False},
               {**_row("ncnn-fp32", timed[2].summary(1)), "accuracy": 0.99}]
        return out

    assert 0.05 < TWIN_TIE < 0.20
    near = rows(10.0 / 1.05)
    result = _choose(near, objective)
    assert result["winner"]["native"] and result["winner_index"] == 0
    assert result["pareto"][objective] == [0]  # the tied Python row is off the front, the slower ncnn dominated
    assert near[1]["defers_to_native"] == ["latency", "throughput"] and near[0]["defers_to_native"] == []
    far = rows(10.0 / 1.2)
    result = _choose(far, objective)
    assert not result["winner"]["native"] and result["winner_index"] == 1
    assert result["pareto"][objective] == [1] and far[1]["defers_to_native"] == []


def test_the_front_reads_accuracy_to_the_tables_decimals():
    """fp32 engines differ from ONNX Runtime by float rounding: a slower one 2e-7 more accurate is dominated
    (the table shows both at 0.99900); 1e-3 more accurate, it stands on the front."""
    from edgesdk.build.tune_report import pareto

    fast, slow = {"accuracy": 0.9989998, "rank_ms": 20.0}, {"accuracy": 0.999, "rank_ms": 30.0}
    assert pareto([fast, slow], "rank_ms") == [0]
    assert pareto([fast, {**slow, "accuracy": 0.9999}], "rank_ms") == [0, 1]


def test_a_configuration_over_the_free_cores_ranks_by_its_loaded_timing():
    """A round measured under load is re-timed and the quieter figure kept; a configuration the load leaves
    oversubscribed is ranked by the loaded one."""
    units, timed, _ = _rounds({"a": [5.0, 20.0, 5.0, 5.0]}, loaded={"a": [20.0]})  # round 2 re-timed: 5.0
    assert timed[0].retimed == 1
    quiet, loaded = timed[0].summary(1), timed[0].summary(1, loaded=True)
    assert quiet["rank_ms"] == 5.0 and quiet["p50_rounds_ms"] == [5.0, 5.0, 5.0]
    assert loaded["rank_ms"] == 20.0 and loaded["rank_fps"] == pytest.approx(50.0)
    assert quiet["others_cores"] == 0.0 and quiet["others_cores_peak"] == 1.5  # what marks it oversubscribed


def test_threads_times_workers_over_the_free_cores_are_marked():
    """The cores free are read at run time (os.cpu_count() less the cores others keep busy, never below one);
    the grid never exceeds this process's cores, and a configuration over the free ones is oversubscribed."""
    from edgesdk.device.tuning import cores, fits, free_cores, offered, others_now, oversubscribed

    n = os.cpu_count()
    assert free_cores(0.0) == min(n, cores())
    assert free_cores(1.0) == max(1, min(n - 1, cores()))
    assert free_cores(0.4) == free_cores(0.0)  # under half a core busy: not a core taken
    assert free_cores(float(n)) == free_cores(n + 3.0) == 1
    for native in (True, False):
        grid = offered(cores(), native)
        assert max(t for t, _ in grid) == cores()
        for t, ws in grid:
            assert 1 in ws and all(w * (max(1, t // w) if native else t) <= cores() for w in ws)
    for load in (0.0, 1.0, n / 2, float(n), others_now(0.2)):
        free = free_cores(load)
        for t in range(1, cores() + 1):
            assert oversubscribed(t, 1, False, load) == (t > free)
            assert oversubscribed(t, 2, False, load) == (2 * t > free)
        assert not oversubscribed(1, 1, False, load)  # one thread always has a core
    # the heaviest of the loads decides: before timing, or during the configuration's own rounds
    assert oversubscribed(cores(), 1, True, 0.0, float(n)) == (cores() > 1)
    assert oversubscribed(cores(), 1, True, None, 0.0) is False
    free = free_cores(1.0)
    assert not fits(free + 1, 1, free) and not fits(1, free + 1, free) and fits(1, 1, free)
