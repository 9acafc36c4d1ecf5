"""Tuned runtime settings: the sidecar a bundle's loader reads, and the timing both tuners share.

Device side (numpy, the standard library, device.bench). `edgesdk tune` writes `tuning.json` beside a
bundle's manifest: engine threads, stream workers, native or Python session, ncnn's cpu_powersave and
the OpenMP wait policy. It is not in the manifest's hashes on purpose: it is written on the device, after
the bundle was built or signed, and none of it changes what the model computes. load() applies it unless
the caller passes its own value; a malformed sidecar is refused by name.

Timing: candidates are measured in interleaved rounds on the same frames. Each measurement records the
1-minute load average (os.getloadavg) and the CPU the rest of the machine used during it (/proc/stat
minus this process); one taken while others used LOADED_CORES more than during the quietest measurement
of the run (a shared machine's steady background would otherwise re-time everything) is re-timed at the end
of its round, and the less loaded of the two is kept (the other's figures stay beside it as the loaded timing).

Ranking: a configuration is ranked by its worst round (RANK_BY), not by the median of its rounds: the
median can rest on one quiet moment, and a configuration that fills every core (ncnn's OpenMP threads
spinning at their barriers) is the one that slows most when the rest of the machine wakes up. Engine
threads x stream workers never exceed this process's cores (offered); a configuration that exceeds the cores
the rest of the machine leaves free (free_cores: os.cpu_count() less others' busy cores, read before timing
and during its own rounds) is marked oversubscribed and ranked by its loaded timing. It is still timed:
some engines (OpenVINO's pool) stay ahead with every core under a core of load, OpenMP's spinning ones do not.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgesdk.atomic import write_bytes
from edgesdk.errors import BundleError

SIDECAR = "tuning.json"
OMP_POLICIES = ("PASSIVE", "ACTIVE")
LOADED_CORES = 0.5  # other processes' CPU during a measurement above the run's quietest, in cores: re-timed
RANK_BY = "worst round's p50 (latency) and worst round's frames/s (throughput) across the interleaved rounds"
_KEYS = {"schema": int, "threads": (int, type(None)), "workers": int, "native": (bool, type(None)),
         "cpu_powersave": (int, type(None)), "omp_wait_policy": (str, type(None)), "objective": str,
         "measured": dict, "cpu": str, "source": str}


def read_sidecar(root: str | Path) -> dict | None:
    """The bundle's tuning.json, checked, or None when there is none."""
    path = Path(root) / SIDECAR
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{path}: unreadable tuning sidecar: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise BundleError(f"{path}: not a schema 1 tuning sidecar (edgesdk tune writes it)")
    return check_settings(data, str(path))


def check_settings(data: dict, where: str) -> dict:
    for key, value in data.items():
        kinds = _KEYS.get(key)
        if kinds is None:
            raise BundleError(f"{where}: unknown key {key!r}; known: {', '.join(sorted(_KEYS))}")
        bad_bool = isinstance(value, bool) and kinds in (int, (int, type(None)))
        if bad_bool or not isinstance(value, kinds):
            raise BundleError(f"{where}: {key} = {value!r} has the wrong type")
    if (data.get("threads") or 1) < 1 or data.get("workers", 1) < 1:
        raise BundleError(f"{where}: threads and workers must be >= 1")
    if data.get("cpu_powersave") not in (None, 0, 1, 2):
        raise BundleError(f"{where}: cpu_powersave must be 0 (all cores), 1 (little) or 2 (big)")
    if data.get("omp_wait_policy") not in (None, *OMP_POLICIES):
        raise BundleError(f"{where}: omp_wait_policy must be one of {', '.join(OMP_POLICIES)} or null")
    return data


def write_sidecar(root: str | Path, settings: dict) -> Path:
    data = check_settings({"schema": 1, **settings}, str(Path(root) / SIDECAR))
    return write_bytes(Path(root) / SIDECAR, (json.dumps(data, indent=2) + "\n").encode())


def openmp_loaded() -> bool:
    """Whether an OpenMP runtime is already mapped into this process (it reads OMP_* when it loads)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return True  # cannot tell: assume too late
    return any(name in maps for name in ("libgomp", "libomp", "libiomp"))


def apply_omp_policy(policy: str | None) -> str | None:
    """OMP_WAIT_POLICY takes effect only when set before the OpenMP runtime loads (ncnn's threads use it:
    ACTIVE spins between layers, PASSIVE sleeps). Set it here when it still can; else say why not."""
    if policy is None:
        return None
    have = os.environ.get("OMP_WAIT_POLICY")
    if have is not None:
        return None if have.upper() == policy else f"OMP_WAIT_POLICY={have} from the environment kept (tuned: {policy})"
    if openmp_loaded():
        return (f"OMP_WAIT_POLICY={policy} not applied: the OpenMP runtime is already loaded in this process; "
                f"export OMP_WAIT_POLICY={policy} before starting it")
    os.environ["OMP_WAIT_POLICY"] = policy
    return None


def big_little() -> bool:
    """Cores of different maximum frequency (big.LITTLE): only then does ncnn's cpu_powersave choose."""
    freqs = set()
    for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            freqs.add(int(p.read_text()))
        except (OSError, ValueError):
            pass
    return len(freqs) > 1


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def free_cores(others: float | None, total: int | None = None) -> int:
    """Cores left for this process's engine threads x stream workers while the rest of the machine keeps
    `others` cores busy (its CPU use, rounded to the nearest core): `total` (os.cpu_count()) less those,
    at most the cores this process may run on, at least one."""
    total = (os.cpu_count() or 1) if total is None else total
    busy = math.floor(max(0.0, others or 0.0) + 0.5)
    return max(1, min(total - busy, cores()))


def others_now(seconds: float = 1.0) -> float:
    """The cores the rest of the machine keeps busy now (this process idles meanwhile); the 1-minute load
    average where /proc/stat cannot be read."""
    with LoadMeter() as load:
        time.sleep(seconds)
    if load.others is not None:
        return load.others
    return load.loadavg or 0.0


def runtime_grid(n: int | None = None) -> tuple[list[int], list[int]]:
    """Engine threads and stream workers worth trying on n cores (default: all this process may use):
    1, n/2, n (and 2 workers). Pair them with fits() so threads x workers stay within the n cores."""
    n = n or cores()
    threads = sorted({1, max(1, n // 2), n})
    return threads, sorted({1, min(2, n), n})


def offered(free: int, native: bool) -> list[tuple[int, list[int]]]:
    """(engine threads, stream widths) worth timing on `free` cores: runtime_grid(free), each width kept only
    where threads x workers fit the free cores (fits)."""
    threads, workers = runtime_grid(free)
    return [(t, [w for w in workers if fits(t, w, free, native)]) for t in threads]


def oversubscribed(threads: int | None, workers: int, native: bool, *others: float | None) -> bool:
    """Whether `threads` x `workers` exceed the cores free under the heaviest of the loads `others` (cores
    the rest of the machine kept busy, e.g. before timing and during the configuration's own rounds)."""
    return not fits(threads, workers, free_cores(max((o for o in others if o is not None), default=0.0)), native)


def fits(threads: int | None, workers: int, free: int, native: bool = False) -> bool:
    """Whether a Model with `threads` engine threads (None: the engine's default, all cores) streaming
    `workers` frames at once stays within `free` cores. Native sessions split the threads between the
    workers (Model.stream: threads // workers each, at least 1); Python sessions run `threads` per worker."""
    t = threads or cores()
    return (max(1, t // workers) if native else t) * workers <= free


# ---------------------------------------------------------------------------- timing

def _busy_jiffies() -> int | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    v = [int(x) for x in fields]
    return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait


class LoadMeter:
    """CPU the rest of the machine used while a measurement ran, in cores, and the load average."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_jiffies(), sum(os.times()[:2])
        return self

    def __exit__(self, *exc):
        wall = max(time.perf_counter() - self.t, 1e-6)
        busy = _busy_jiffies()
        own = sum(os.times()[:2]) - self.own
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.others = None if busy is None or self.busy is None else max(0.0, ((busy - self.busy) / tick - own) / wall)
        self.loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return False

    def loaded(self, quietest: float | None) -> bool:
        if self.others is not None:
            return self.others > (quietest or 0.0) + LOADED_CORES
        return self.loadavg is not None and self.loadavg > cores()


_quietest: list[float] = []  # the least CPU others used during any measurement of this process's run


def measure(model, frames, workers: list[int], slice_s: float = 0.4, warm: bool = False) -> dict[int, dict]:
    """One measurement per stream width of a loaded Model on `frames`, through device.bench: the p50 of
    one frame at a time, and frames/s with `w` frames in flight. {workers: {p50_ms, fps, others, loadavg}}."""
    from edgesdk.device.bench import benchmark

    if warm:  # first use: each stream width may build its own engine layout
        for w in workers:
            if w > 1:
                list(model.stream(frames[: 2 * w] * 2, workers=w))
    out = {}
    with LoadMeter() as load:
        r = benchmark(model, frames, seconds=slice_s, warmup=2)
    p50, iters = r["p50_ms"], r["iterations"]
    out[1] = {"p50_ms": p50, "fps": r["throughput_fps"], **_load(load)}
    for w in workers:
        if w == 1:
            continue
        with LoadMeter() as load:
            r = benchmark(model, frames, iters=max(2 * w, min(200, iters)), warmup=1, streams=w)
        out[w] = {"p50_ms": p50, "fps": r["throughput_fps"], **_load(load)}
    return out


def _load(meter: LoadMeter) -> dict:
    if meter.others is not None:
        _quietest[:] = [min(_quietest + [meter.others])]
    return {"others": meter.others, "loadavg": meter.loadavg, "loaded": meter.loaded(_quietest[0] if _quietest else None)}


@dataclass
class Timed:
    """Per unit (one loaded configuration) and stream width: the kept measurement of every round."""
    rounds: dict[int, list[dict]] = field(default_factory=dict)
    retimed: int = 0

    def add(self, results: dict[int, dict]) -> None:
        for w, m in results.items():
            self.rounds.setdefault(w, []).append(m)

    def summary(self, w: int, loaded: bool = False) -> dict | None:
        """The rounds' figures for width w: the median (p50_ms, fps), and what ranks (rank_ms, rank_fps: see
        rank()). loaded: rank by the loaded timing of a re-timed round, not the quieter one kept."""
        ms = self.rounds.get(w)
        if not ms:
            return None
        others = [m["others"] for m in ms if m["others"] is not None]
        peak = others_peak(ms)
        loads = [m["loadavg"] for m in ms if m["loadavg"] is not None]
        rank_ms, rank_fps, p50s = rank(ms, loaded)
        return {"p50_ms": statistics.median(m["p50_ms"] for m in ms), "fps": statistics.median(m["fps"] for m in ms),
                "rank_ms": rank_ms, "rank_fps": rank_fps, "p50_rounds_ms": [round(x, 3) for x in p50s],
                "rounds": len(ms), "loaded_rounds": sum(m["loaded"] for m in ms), "retimed": self.retimed,
                "others_cores": round(max(others), 2) if others else None,
                "others_cores_peak": None if peak is None else round(peak, 2),
                "loadavg": round(max(loads), 2) if loads else None}


def rank(ms: list[dict], loaded: bool = False) -> tuple[float, float, list[float]]:
    """What ranks a configuration (RANK_BY) from its rounds' measurements: (the highest per-round p50, the
    lowest per-round frames/s, the per-round p50s). A configuration fast only while the machine was quiet
    loses to one that stays fast in every round. loaded: a re-timed round counts with its loaded figures,
    not the quieter ones kept (an oversubscribed configuration)."""
    p50s = [m.get("loaded_p50_ms", m["p50_ms"]) if loaded else m["p50_ms"] for m in ms]
    fpss = [m.get("loaded_fps", m["fps"]) if loaded else m["fps"] for m in ms]
    return max(p50s), min(fpss), p50s


def others_peak(ms: list[dict]) -> float | None:
    """The most CPU the rest of the machine used during any of these measurements, re-timed-away ones too."""
    return max((x for m in ms for x in (m["others"], m.get("loaded_others")) if x is not None), default=None)


def _retimed(first: dict[int, dict], again: dict[int, dict]) -> dict[int, dict]:
    """Per width, the less loaded of two measurements, with the slower figures of the pair beside it
    (loaded_p50_ms, loaded_fps): what an oversubscribed configuration is ranked by."""
    out = {}
    for w, m in first.items():
        pair = (m, again.get(w, m))
        out[w] = {**min(pair, key=lambda x: x["others"] or 0.0), "loaded_p50_ms": max(x["p50_ms"] for x in pair),
                  "loaded_fps": min(x["fps"] for x in pair),
                  "loaded_others": max((x["others"] for x in pair if x["others"] is not None), default=None)}
    return out


def time_rounds(units: list, run: Callable[[object, bool], dict[int, dict]], rounds: int, deadline: float,
                progress: Callable[[str], None] | None = None) -> tuple[dict[int, Timed], int]:
    """Interleaved rounds over `units`: run(unit, first) -> measure()'s dict. The order rotates every round
    so no unit always follows the same neighbour; a measurement taken under load is re-timed once at the end
    of its round (the less loaded one is kept). Stops at `deadline` between measurements.
    Returns ({unit index: Timed}, rounds completed)."""
    timed = {i: Timed() for i in range(len(units))}
    done = 0
    for r in range(rounds):
        order = list(range(len(units)))
        order = order[r % len(order):] + order[: r % len(order)] if order else order
        pending: dict[int, dict] = {}
        for i in order:
            # Past the deadline, keep what this round measured (a unit may have no other); the first
            # measurement is taken even then, so builds that ate the budget still leave one timed winner.
            if time.monotonic() > deadline and (pending or done):
                for j, res in pending.items():
                    timed[j].add(res)
                return timed, done
            pending[i] = run(units[i], r == 0)
        for i, res in pending.items():
            if any(m["loaded"] for m in res.values()) and time.monotonic() < deadline:
                timed[i].retimed += 1
                res = _retimed(res, run(units[i], False))
            timed[i].add(res)
        done += 1
        if progress:
            loads = [m["loadavg"] for t in timed.values() for ms in t.rounds.values() for m in ms[-1:] if m["loadavg"]]
            progress(f"round {done}/{rounds} timed {len(units)} configuration(s); load average "
                     f"{max(loads) if loads else 0:.2f} on {cores()} cores")
    return timed, done
