"""`edgesdk tune BUNDLE --runtime-only`: the runtime knobs alone, with the engine already in the bundle.

Device side. Tries engine threads x stream workers x native or Python session, ncnn's cpu_powersave where the
cores differ (big.LITTLE) and, for ncnn (whose threads are OpenMP's), the OpenMP wait policy. That policy is
read once, when the OpenMP runtime loads, so every round runs in a child process started with its
OMP_WAIT_POLICY (none, PASSIVE, ACTIVE); the children take turns, so each policy meets the same machine.
The best settings go into the bundle's tuning.json, which load() reads.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from edgesdk.errors import EdgeSDKError

OBJECTIVES = ("latency", "throughput")
_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def frames_for(model, images: str | Path | None) -> list:
    """Real frames from `images` (a folder), else four seeded 720p frames (what `edgesdk bench` times)."""
    import numpy as np

    from edgesdk.device.preprocess import read_image

    if images:
        d = Path(images)
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in _SUFFIXES)[:8] if d.is_dir() else []
        if not files:
            raise EdgeSDKError(f"{d}: no such image folder, or no images in it ({', '.join(_SUFFIXES)})")
        return [read_image(p) for p in files]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(4)]


def plan(bundle: Path) -> tuple[list[dict], list[int], list[str | None], list[str]]:
    """(units, stream widths, OpenMP policies, notes): what is worth trying for this bundle here. Each unit
    names its own widths: engine threads x workers within this process's cores (device.tuning.offered);
    the bundle's defaults (the baseline) are timed at every width of the grid."""
    from edgesdk.backends import registry
    from edgesdk.backends.base import Artifact
    from edgesdk.device.bundle import MODEL_DIR, read_manifest
    from edgesdk.device.native import NativeSession
    from edgesdk.device.tuning import OMP_POLICIES, big_little, cores, offered, runtime_grid

    manifest = read_manifest(bundle)
    artifact = Artifact.load(manifest.root / MODEL_DIR)
    notes, natives = [], []
    why = NativeSession.unavailable(artifact)
    if why is None:
        natives.append(True)
    else:
        notes.append(f"native session: {why}")
    why = registry.get(artifact.backend).available()
    if why is None:
        natives.append(False)
    else:
        notes.append(f"Python session: {why}")
    if not natives:
        raise EdgeSDKError(f"{bundle}: no session can run this {artifact.backend} bundle here")
    _, workers = runtime_grid(cores())
    powersave: list[int | None] = [None]
    policies: list[str | None] = [None]
    if artifact.backend == "ncnn":
        policies += list(OMP_POLICIES)
        if big_little():
            powersave = [0, 1, 2]
        else:
            notes.append("ncnn cpu_powersave: not tried, every core has the same maximum frequency (no big.LITTLE)")
    else:
        notes.append(f"OpenMP wait policy: not tried, {artifact.backend} does not run on OpenMP threads")
    units = [{"threads": None, "native": None, "cpu_powersave": None, "widths": workers}]  # the bundle's defaults
    units += [{"threads": t, "native": n, "cpu_powersave": p, "widths": ws}
              for n in natives for t, ws in offered(cores(), n) for p in powersave]
    return units, workers, policies, notes


def _measure_units(bundle: Path, units: list[dict], workers: list[int], images, deadline: float,
                   slice_s: float) -> dict:
    """One interleaved round over `units` in this process: {index: {workers: measurement}}."""
    from edgesdk.device.runtime import Model
    from edgesdk.device.tuning import measure, time_rounds

    models: dict[int, Model] = {}
    frames = None

    def run(unit, first):
        nonlocal frames
        i = units.index(unit)
        if i not in models:
            models[i] = Model(bundle, threads=unit["threads"], native=unit["native"],
                              tuning={"cpu_powersave": unit["cpu_powersave"]})
        if frames is None:
            frames = frames_for(models[i], images)
        return measure(models[i], frames, unit["widths"], slice_s, warm=first)

    try:
        timed, _ = time_rounds(units, run, 1, deadline)
    finally:
        for m in models.values():
            m.close()
    return {i: t.rounds for i, t in timed.items()}


def _child_round(bundle: Path, units, workers, images, policy: str | None, seconds_left: float,
                 slice_s: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    job = json.dumps({"bundle": str(bundle), "units": units, "workers": workers,
                      "images": str(images) if images else None, "seconds": seconds_left, "slice": slice_s})
    proc = subprocess.run([sys.executable, "-m", "edgesdk.device.tune_runtime", job], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeSDKError(f"{bundle}: timing with OMP_WAIT_POLICY={policy or 'unset'} failed: {tail}")
    return {int(k): {int(w): ms for w, ms in v.items()} for k, v in json.loads(proc.stdout).items()}


def tune_runtime(bundle: str | Path, minutes: float = 2.0, objective: str = "latency", images=None,
                 rounds: int = 3, progress: Callable[[str], None] | None = None) -> dict:
    """Time the runtime settings of a bundle and write the best into its tuning.json. Returns the table."""
    from edgesdk.device.bench import cpu_name
    from edgesdk.device.tuning import (RANK_BY, free_cores, others_now, others_peak, oversubscribed, rank,
                                       write_sidecar)

    check_budget(minutes, objective)
    bundle = Path(bundle)
    others = others_now()
    free = free_cores(others)
    units, workers, policies, notes = plan(bundle)
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    slice_s = 0.5
    say = progress or (lambda msg: None)
    say(f"runtime-only: {len(units)} settings x {len(policies)} OpenMP wait policies x workers {workers} "
        f"(others keep {others:.2f} of {os.cpu_count()} cores busy: beyond {free} ranked by the loaded timing), "
        f"{rounds} rounds, {minutes:g} min")
    got: dict[tuple, list[dict]] = {}
    done = 0
    for r in range(rounds):
        for k in range(len(policies)):
            policy = policies[(k + r) % len(policies)]
            left = deadline - time.monotonic()
            if left <= 0:
                break
            res = _child_round(bundle, units, workers, images, policy, left, slice_s)
            for i, by_w in res.items():
                for w, ms in by_w.items():
                    got.setdefault((policy, i, w), []).extend(ms)
        else:
            done += 1
            say(f"round {done}/{rounds} done, {time.monotonic() - t0:.0f} s, load average {os.getloadavg()[0]:.2f}")
            continue
        break
    if not got:
        raise EdgeSDKError(f"{bundle}: the time budget ({minutes:g} min) ended before one setting was timed")
    rows = []
    for (policy, i, w), ms in got.items():
        unit = {k: v for k, v in units[i].items() if k != "widths"}
        over = unit["threads"] is not None and oversubscribed(unit["threads"], w, bool(unit["native"]), others,
                                                              others_peak(ms))
        rank_ms, rank_fps, _ = rank(ms, loaded=over)
        rows.append({**unit, "omp_wait_policy": policy, "workers": w, "over_free_cores": over,
                     "p50_ms": statistics.median(m["p50_ms"] for m in ms), "fps": statistics.median(m["fps"] for m in ms),
                     "rank_ms": rank_ms, "rank_fps": rank_fps, "rounds": len(ms),
                     "loaded_rounds": sum(m["loaded"] for m in ms), "loadavg": max((m["loadavg"] or 0) for m in ms)})
    key = ((lambda x: (x["rank_ms"], -x["rank_fps"])) if objective == "latency"
           else (lambda x: (-x["rank_fps"], x["rank_ms"])))
    rows.sort(key=key)
    best = rows[0]
    if objective == "latency":  # the width changes throughput only: the best one for these settings
        same = lambda x: all(x[k] == best[k] for k in ("threads", "native", "cpu_powersave", "omp_wait_policy"))  # noqa: E731
        best = {**max(filter(same, rows), key=lambda x: x["rank_fps"]), "p50_ms": best["p50_ms"],
                "rank_ms": best["rank_ms"]}
    base = [x for x in rows if x["threads"] is None and x["native"] is None and x["omp_wait_policy"] is None]
    base = next((x for x in base if x["workers"] == 2), base[0] if base else None)
    settings = {k: best[k] for k in ("threads", "workers", "native", "cpu_powersave", "omp_wait_policy")}
    settings.update(objective=objective, cpu=cpu_name(), source="edgesdk tune --runtime-only",
                    measured={"p50_ms": round(best["p50_ms"], 3), "fps": round(best["fps"], 2),
                              "rank_ms": round(best["rank_ms"], 3), "rank_fps": round(best["rank_fps"], 2),
                              "default_p50_ms": round(base["p50_ms"], 3) if base else None,
                              "default_fps": round(base["fps"], 2) if base else None})
    path = write_sidecar(bundle, settings)
    stopped = done < rounds
    return {"bundle": str(bundle), "objective": objective, "settings": settings, "sidecar": str(path),
            "rank_by": RANK_BY, "free_cores": free, "others_cores_before": round(others, 2), "rounds": done, "stopped_early": stopped, "seconds": round(time.monotonic() - t0, 1),
            "notes": notes + (["the time budget ended before every round ran: figures rest on fewer rounds"]
                              if stopped else []), "table": rows}


def check_budget(minutes, objective) -> None:
    if objective not in OBJECTIVES:
        raise EdgeSDKError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < float("inf"):
        raise EdgeSDKError(f"--minutes must be a number > 0, got {minutes!r}")


def _child(job: str) -> int:
    spec = json.loads(job)
    res = _measure_units(Path(spec["bundle"]), spec["units"], spec["workers"], spec["images"],
                         time.monotonic() + spec["seconds"], spec["slice"])
    print(json.dumps(res))
    return 0


if __name__ == "__main__":  # one timing round in a fresh process (its OpenMP reads OMP_WAIT_POLICY at load)
    try:
        sys.exit(_child(sys.argv[1]))
    except EdgeSDKError as e:
        print(f"edgesdk: error: {e}", file=sys.stderr)
        sys.exit(2)
