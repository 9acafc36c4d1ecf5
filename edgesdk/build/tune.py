"""`edgesdk tune MODEL --calib DIR --out DIR`: the fastest engine, precision and threading that keep the
accuracy, measured on this machine.

Candidates: the engines that run here x precisions (fp32; fp16 and bf16 only where this CPU computes them,
read from /proc/cpuinfo; int8 under the accuracy budget) x engine threads x stream workers x native or
Python session. Each engine/precision is packaged once by build.package (so it passes the same gate as any
bundle: fp32 the profile's [validate], fp16/bf16 the fp16 tolerance, int8 the [quantize] budget or the
shipped default), then every configuration is timed by device.tuning on the same real frames in interleaved
rounds. The winner is written as a bundle with `tuned.toml` (the profile that rebuilds it), `tune.json`
(every candidate, the Pareto fronts, what failed and why) and its tuning.json runtime settings.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from edgesdk.errors import EdgeSDKError

BUILD_SHARE = 0.5  # of the time budget, the most builds may take before timing starts
INT8_COST = 10  # an int8 build (calibration + budget loop) against an fp32 one, measured: 18-28 s vs 1.5-5 s
ACCURACY_SAMPLES = 8  # build.package.convert's parity samples: the accuracy axis uses the gate's feeds


@dataclasses.dataclass(frozen=True)
class Candidate:
    engine: str
    label: str  # fp32 | fp16 | bf16 | int8: what it computes in
    precision: str  # what the bundle stores
    engine_options: tuple = ()

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.label}"


def cpu_flags() -> set[str]:
    from edgesdk.device.board import read_text

    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def plan(base_engine_options: dict, base_engine: str, flags: set[str] | None = None
         ) -> tuple[list[Candidate], list[str]]:
    """(candidates in build order, cheap first; what is not tried here and why)."""
    from edgesdk.backends import registry

    flags = cpu_flags() if flags is None else flags
    fp16 = bool(flags & {"asimdhp", "fphp", "avx512_fp16", "amx_fp16"})  # fp16 arithmetic, not just F16C
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    engines, skipped = [], []
    for engine in ("openvino", "ncnn", "onnxruntime"):
        why = registry.get(engine).available()
        if why:
            skipped.append(f"{engine}: {why}")
        else:
            engines.append(engine)
    cands, later = [], []
    for e in engines:
        opts = dict(base_engine_options) if e == base_engine else {}
        cands.append(Candidate(e, "fp32", "fp32", tuple(sorted({**opts, **({"inference_precision": "f32"}
                                                                             if e == "openvino" else {})}.items()))))
        if e == "openvino" and bf16:
            cands.append(Candidate(e, "bf16", "fp32", tuple(sorted({**opts, "inference_precision": "bf16"}.items()))))
        if e in ("openvino", "ncnn") and fp16:
            extra = {"inference_precision": "f16"} if e == "openvino" else {"fp16_arithmetic": True}
            cands.append(Candidate(e, "fp16", "fp16", tuple(sorted({**opts, **extra}.items()))))
        later.append(Candidate(e, "int8", "int8", tuple(sorted(opts.items()))))
    if not fp16:
        skipped.append("fp16: this CPU has no fp16 arithmetic (no asimdhp/avx512_fp16 in /proc/cpuinfo); "
                       "fp16 weights would compute in fp32")
    if not bf16:
        skipped.append("bf16: this CPU has no bf16 arithmetic (no avx512_bf16/amx_bf16)")
    elif "ncnn" in engines or "onnxruntime" in engines:
        skipped.append("bf16 on ncnn and onnxruntime: their CPU kernels here compute in fp32 (OpenVINO only)")
    return cands + later, skipped


def _profile(base, c: Candidate, name: str, threads: int = 0, streams: int = 1):
    from edgesdk.device.compare import TOLERANCES

    validate = dict(base.validate)
    if c.label in ("fp16", "bf16"):  # half-width arithmetic: the project's fp16 gate, not fp32's
        validate["min_cosine"] = min(validate.get("min_cosine", 1.0), TOLERANCES["fp16"].min_cosine)
    return dataclasses.replace(base, name=name, engine=c.engine, precision=c.precision, threads=threads,
                               streams=streams, engine_options=dict(c.engine_options), validate=validate,
                               description=f"{c.engine} {c.label}, chosen by edgesdk tune on this machine",
                               quantize=base.quantize if c.precision == "int8" else {}, source=name)


def _accuracy(manifest: dict) -> dict:
    v = manifest["validation"] or {}
    q = manifest.get("quantization") or {}
    last = (q.get("steps") or [{}])[-1].get("check", {}) if q else {}
    return {"cosine_min": v.get("cosine_min"), "top1": v.get("top1_agreement"), "top1_drop": last.get("top1_drop")}


def _firing_accuracy(bundle: Path, model: Path, size_of: dict, images: list, refs: dict, min_cosine: float) -> dict:
    """The Pareto table's accuracy axis: the candidate against ONNX Runtime on the parity gate's feeds
    (make_feeds, same images, seed and count), judged as the int8 budget judges (build.budget.check_budget
    at the candidate's gate cosine `min_cosine`): a sample whose output barely fires (a text detector's map
    of a photo without text: cosine under the gate's, max-abs within the int8 atol) is held by its max-abs
    and left out of the cosine, which says nothing there. `accuracy` is the cosine of the samples that
    fire (None: none fires). `refs` caches ONNX Runtime's outputs per feed shape across candidates."""
    from edgesdk.backends.onnxruntime.session import reference_session
    from edgesdk.build.budget import Budget, check_budget
    from edgesdk.build.parity import make_feeds
    from edgesdk.device.preprocess import PreprocessSpec
    from edgesdk.device.runtime import Model

    with Model(bundle, tuning=False) as m:
        pre = m.manifest["preprocess"]
        feeds, _ = make_feeds(m.inputs, size_of, images, PreprocessSpec.from_dict(pre) if pre else None,
                              ACCURACY_SAMPLES)
        key = tuple((n, a.shape) for n, a in feeds[0].items())
        if key not in refs:
            with reference_session(model) as ref:
                refs[key] = [ref.run(f) for f in feeds]
        gots = [m.infer(f) for f in feeds]
    check = check_budget(refs[key], gots, Budget(min_cosine=min_cosine))
    return {"accuracy": check.judged_cosine_min if check.near_zero else check.cosine_min,
            "accuracy_samples": check.samples, "near_zero": check.near_zero,
            "near_zero_max_abs": check.max_abs, "near_zero_atol": check.atol}


def tune(model: str | Path, calib, out: str | Path, target: str | Path = "host", minutes: float = 10.0,
         objective: str = "latency", shapes: dict | None = None, spec=None, labels: list[str] | None = None,
         rounds: int = 3, progress: Callable[[str], None] | None = None) -> dict:
    from edgesdk.build.calibration import image_files
    from edgesdk.build.package import package
    from edgesdk.build.targets import TargetProfile, load_target
    from edgesdk.device.preprocess import read_image
    from edgesdk.device.tune_runtime import check_budget
    from edgesdk.device.tuning import RANK_BY, cores, free_cores, others_now

    check_budget(minutes, objective)
    if calib is None:
        raise EdgeSDKError("tune needs --calib DIR: real images to calibrate int8, gate every candidate and time on")
    images = image_files(calib) if isinstance(calib, (str, Path)) else list(calib)
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise EdgeSDKError(f"{model}: no such model file")
    base = target if isinstance(target, TargetProfile) else load_target(target)
    say = progress or (lambda msg: None)
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    cands, skipped = plan(base.engine_options, base.engine)
    failed, built, stopped = [], [], ""
    size_of = {**{n: r.opt for n, r in base.ranges.items()}, **(shapes or {})}
    refs: dict = {}
    say(f"tune      {len(cands)} engine/precision builds, objective {objective}, budget {minutes:g} min")
    with tempfile.TemporaryDirectory(prefix="edgesdk-tune-") as work:
        fp32_cost, int8_cost = None, 0.0
        for k, c in enumerate(cands):
            est = (fp32_cost or 10.0) if c.precision != "int8" else max(int8_cost, INT8_COST * (fp32_cost or 10.0))
            if time.monotonic() + est > t0 + BUILD_SHARE * minutes * 60:
                skipped += [f"{x.name}: time budget (about {est:.0f} s to build, {minutes:g} min in all)"
                            for x in cands[k:]]
                stopped = f"{len(cands) - k} build(s) left out by the time budget"
                break
            say(f"build     [{k + 1}/{len(cands)}] {c.name}")
            t = time.monotonic()
            try:
                res = package(model, _profile(base, c, f"tune-{c.name}"), Path(work) / c.name, calib=images,
                              shapes=shapes, spec=spec, labels=labels)
            except EdgeSDKError as e:
                why = str(e).strip().splitlines() or [type(e).__name__]
                if c.label != c.precision:  # bf16/fp16 compute on fp32 weights: package names the weights only
                    why[0] = f"{c.precision} weights computing in {c.label}: {why[0]}"
                failed.append({"candidate": c.name, "why": " ".join(why[:3])[:400]})
                say(f"failed    {c.name}: {why[0]}")
                continue
            if c.precision != "int8":
                fp32_cost = max(fp32_cost or 0.0, time.monotonic() - t)
            else:
                int8_cost = max(int8_cost, time.monotonic() - t)
            if res.manifest["validation"].get("passed") is None:
                failed.append({"candidate": c.name, "why": "not validated here: " + "; ".join(
                    res.manifest["validation"].get("notes", []))})
                continue
            try:
                gate = res.manifest["validation"]["tolerance"]["min_cosine"]
                acc = _firing_accuracy(res.out, model, size_of, images, refs, gate)
            except EdgeSDKError as e:  # e.g. a dynamic input the profile fixes no size for: the gate's figure
                acc = {"accuracy": None, "accuracy_note": str(e).splitlines()[0]}
            built.append((c, res.out, {**_accuracy(res.manifest), **acc}))
        if not built:
            raise EdgeSDKError(f"{model}: no candidate passed the gate: "
                               + "; ".join(f"{f['candidate']}: {f['why'][:120]}" for f in failed))
        frames = [read_image(p) for p in images[:8]]
        others = others_now()
        free = free_cores(others)
        say(f"load      others keep {others:.2f} of {os.cpu_count()} cores busy: {free} free; configurations "
            f"with more engine threads x workers are ranked by their loaded timing")
        rows, timing = _time(built, frames, rounds, deadline, others, say)
        skipped += timing["untimed"]
        if timing["rounds"] < rounds:
            stopped = "; ".join(filter(None, [stopped, f"timed {timing['rounds']} of {rounds} rounds before the budget"]))
        result = _choose(rows, objective)
        w = result["winner"]
        c = next(b[0] for b in built if b[0].name == w["candidate"])
        profile = _profile(base, c, f"tuned-{model.stem}", threads=w["threads"] or 0, streams=w["workers"])
        result.update(objective=objective, rounds=timing["rounds"], frames=len(frames), cores=cores(),
                      free_cores=free, load={**timing["load"], "others_cores_before": round(others, 2)},
                      rank_by=RANK_BY, failed=failed, skipped=skipped, stopped_early=stopped or None,
                      out=str(out), profile=str(out / "tuned.toml"), minutes=minutes,
                      seconds=round(time.monotonic() - t0, 1))
        _write_winner(Path(work) / c.name, out, profile, result)
    return result


def run_tune(args, shapes, progress) -> tuple[dict, str]:
    """`edgesdk tune`: (the --json dict, the human summary)."""
    if args.rounds < 1:
        raise EdgeSDKError(f"--rounds must be >= 1, got {args.rounds}")
    if args.runtime_only:
        from edgesdk.device.tune_runtime import tune_runtime

        r = tune_runtime(args.path, minutes=args.minutes, objective=args.objective, images=args.images,
                         rounds=args.rounds, progress=progress)
        s, m = r["settings"], r["settings"]["measured"]
        return r, (f"{r['sidecar']}: threads {s['threads'] or 'default'}, workers {s['workers']}, native {s['native']}, "
                   f"cpu_powersave {s['cpu_powersave']}, OMP_WAIT_POLICY {s['omp_wait_policy'] or 'unset'}: p50 "
                   f"{m['p50_ms']:.2f} ms, {m['fps']:.1f} fps (bundle defaults: {m['default_p50_ms']} ms, "
                   f"{m['default_fps']} fps)" + "".join(f"\n  {n}" for n in r["notes"]))
    if args.out is None:
        raise EdgeSDKError("tune MODEL needs --out DIR (or: tune BUNDLE --runtime-only)")
    r = tune(args.path, args.calib, args.out, target=args.target, minutes=args.minutes, objective=args.objective,
             shapes=shapes, rounds=args.rounds, progress=progress)
    from edgesdk.build.tune_report import summary_text

    return r, summary_text(r)


def _time(built, frames, rounds: int, deadline: float, others: float, say) -> tuple[list[dict], dict]:
    """Every (candidate, session, threads) loaded once and timed in interleaved rounds; a row per stream width,
    threads x workers within this process's cores. A row over the cores free under the load `others` measured
    before timing, or under the heaviest load of its own rounds, is marked (over_free_cores) and ranked by its
    loaded timing."""
    from edgesdk.backends import registry
    from edgesdk.backends.base import Artifact
    from edgesdk.device.bundle import MODEL_DIR
    from edgesdk.device.native import NativeSession
    from edgesdk.device.runtime import Model
    from edgesdk.device.tuning import cores, measure, offered, oversubscribed, time_rounds

    units, widths = [], {}
    for b, (c, path, _) in enumerate(built):
        art = Artifact.load(path / MODEL_DIR)
        natives = [n for n, why in ((True, NativeSession.unavailable(art)),
                                    (False, registry.get(c.engine).available())) if why is None]
        grid = [(n, t, ws) for n in natives for t, ws in reversed(offered(cores(), n))]
        units += [(k, b, n, t) for k, (n, t, _) in enumerate(grid)]
        widths.update({(b, n, t): ws for n, t, ws in grid})
    # breadth first (rank within its candidate, then candidate): a round cut short by the budget has still
    # timed every candidate once, on its first session with all the cores
    units = [u[1:] for u in sorted(units)]
    workers = sorted({w for ws in widths.values() for w in ws})
    say(f"time      {len(units)} configurations x workers {workers} (threads x workers within {cores()} cores) "
        f"on {len(frames)} frames, {rounds} rounds")
    models: dict[tuple, object] = {}

    def run(unit, first):
        if unit not in models:
            b, native, t = unit
            models[unit] = Model(built[b][1], threads=t, native=native, tuning=False)
        return measure(models[unit], frames, widths[unit], warm=first)

    try:
        timed, done = time_rounds(units, run, rounds, deadline, lambda m: say(f"time      {m}"))
    finally:
        for m in models.values():
            m.close()
    rows, loads = [], []
    for i, (b, native, t) in enumerate(units):
        c, _, acc = built[b]
        for w in widths[(b, native, t)]:
            s = timed[i].summary(w)
            if s is None:
                continue
            over = oversubscribed(t, w, native, others, s["others_cores_peak"])
            if over:
                s = timed[i].summary(w, loaded=True)
            loads.append(s["loadavg"] or 0.0)
            rows.append({"candidate": c.name, "engine": c.engine, "precision": c.label,
                         "session": "native" if native else "python", "native": native, "threads": t,
                         "workers": w, **acc, "p50_ms": s["p50_ms"], "fps": s["fps"], "rank_ms": s["rank_ms"],
                         "rank_fps": s["rank_fps"], "p50_rounds_ms": s["p50_rounds_ms"], "rounds": s["rounds"],
                         "loaded_rounds": s["loaded_rounds"], "retimed": s["retimed"], "over_free_cores": over,
                         "others_cores": s["others_cores"], "others_cores_peak": s["others_cores_peak"],
                         "loadavg": s["loadavg"]})
    if not rows:
        raise EdgeSDKError("the time budget ended before any candidate was timed: give tune more --minutes")
    timed_names = {r["candidate"] for r in rows}
    untimed = [f"{c.name}: built and gated, not timed (time budget)" for c, _, _ in built if c.name not in timed_names]
    return rows, {"rounds": done, "load": {"min": min(loads), "max": max(loads)}, "untimed": untimed}


def _choose(rows: list[dict], objective: str) -> dict:
    """The winner and the Pareto fronts, ranked by each row's rank_ms / rank_fps (device.tuning.RANK_BY: the
    worst round), not by the median that one quiet moment can carry. A Python row within TWIN_TIE of its
    native twin (tune_report.defers) is marked defers_to_native and left out of that objective's ranking
    and front."""
    from edgesdk.build.tune_report import defers, pareto

    defer = {"latency": defers(rows, "rank_ms"), "throughput": defers(rows, "rank_fps")}
    for i, r in enumerate(rows):
        r["cosine_min"] = r["cosine_min"] if r["cosine_min"] is not None else 0.0
        r["defers_to_native"] = [k for k in ("latency", "throughput") if i in defer[k]]
    single = [i for i, r in enumerate(rows) if r["workers"] == 1 and i not in defer["latency"]]
    ranked = [i for i in range(len(rows)) if i not in defer["throughput"]]
    lat = [single[i] for i in pareto([rows[i] for i in single], "rank_ms")]
    thr = [ranked[i] for i in pareto([rows[i] for i in ranked], "rank_fps")]
    if objective == "latency":
        best = min(single, key=lambda i: (rows[i]["rank_ms"], -rows[i]["rank_fps"]))
        same = [i for i, r in enumerate(rows) if all(r[k] == rows[best][k] for k in ("candidate", "native", "threads"))]
        best_w = max(same, key=lambda i: rows[i]["rank_fps"])  # the width only changes throughput
        winner = {**rows[best_w], **{k: rows[best][k] for k in ("p50_ms", "rank_ms", "p50_rounds_ms")}}
    else:
        best_w = max(ranked, key=lambda i: (rows[i]["rank_fps"], -rows[i]["rank_ms"]))
        winner = rows[best_w]
    return {"winner": winner, "winner_index": best_w, "candidates": rows,
            "pareto": {"latency": lat, "throughput": thr}}


def _write_winner(src: Path, out: Path, profile, result: dict) -> None:
    """The winner's bundle, as package() wrote it, with the tuned profile in its manifest, tuned.toml, tune.json
    and the report's tuning section (all hashed), then tuning.json (not hashed: the device may rewrite it)."""
    from edgesdk.atomic import staged_dir
    from edgesdk.build.tune_report import profile_toml, report_section
    from edgesdk.device.bench import cpu_name
    from edgesdk.device.bundle import write_manifest
    from edgesdk.device.tuning import write_sidecar

    w = result["winner"]
    with staged_dir(out) as stage:
        shutil.copytree(src, stage, dirs_exist_ok=True)
        manifest = json.loads((stage / "manifest.json").read_text())
        manifest.update(target=profile.to_dict(), threads=w["threads"])
        (stage / "tuned.toml").write_text(profile_toml(profile))
        (stage / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
        with open(stage / "report.md", "a") as f:
            f.write(report_section(result))
        write_manifest(stage, manifest)
        write_sidecar(stage, {"threads": w["threads"], "workers": w["workers"], "native": w["native"],
                              "objective": result["objective"], "cpu": cpu_name(), "source": "edgesdk tune",
                              "measured": {"p50_ms": round(w["p50_ms"], 3), "fps": round(w["fps"], 2),
                                           "rank_ms": round(w["rank_ms"], 3), "rank_fps": round(w["rank_fps"], 2)}})
