"""What `edgesdk tune` writes beside the winner: the Pareto fronts, the profile TOML that reproduces it,
and the report section. Build side."""
from __future__ import annotations

import json


ACCURACY_DECIMALS = 5  # the accuracy column's and the front's resolution


def accuracy(row: dict) -> float:
    """A row's place on the accuracy axis: the cosine against ONNX Runtime of the samples whose output fires
    (build.tune._firing_accuracy); every sample barely firing and held by max-abs within the int8 atol: 1.0
    (nothing left for the cosine to tell apart); not measured: the parity gate's cosine."""
    if row.get("accuracy") is not None:
        return row["accuracy"]
    return 1.0 if row.get("near_zero") else row["cosine_min"]


def pareto(rows: list[dict], speed: str) -> list[int]:
    """Indices of `rows` no other row beats on both `speed` (a key ending in _ms: lower is better, e.g.
    rank_ms; else higher, e.g. rank_fps) and accuracy() (higher is better)."""
    sign = 1 if speed.endswith("_ms") else -1
    # to the table's 5 decimals: fp32 engines differ from ORT by float rounding (1e-7), which must not put a
    # 50% slower fp32 engine on the front beside one the table shows as equally accurate
    acc = [round(accuracy(r), ACCURACY_DECIMALS) for r in rows]
    front = []
    for i, a in enumerate(rows):
        beaten = any(sign * b[speed] <= sign * a[speed] and acc[j] >= acc[i]
                     and (sign * b[speed] < sign * a[speed] or acc[j] > acc[i])
                     for j, b in enumerate(rows) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: sign * rows[i][speed])


# The Python and the native session of one configuration run the same engine graph with the same settings;
# this close on the ranking statistic, their order is the run's noise (PP-OCRv4 det, OpenVINO fp32: Python
# 21.6 ms vs native 23.0 ms worst round in tune, the order reversed in the benchmark's rounds). The native
# runtime, the board's path with no Python per frame, is then the one that ranks.
TWIN_TIE = 0.07


def defers(rows: list[dict], speed: str) -> set[int]:
    """Python rows not faster on `speed` (rank_ms or rank_fps) by more than TWIN_TIE than their native twin
    (same candidate, threads, workers): they neither win nor stand on the front for that objective."""
    twin = {(r["candidate"], r["threads"], r["workers"]): r[speed] for r in rows if r["native"]}
    out = set()
    for i, r in enumerate(rows):
        t = twin.get((r["candidate"], r["threads"], r["workers"]))
        if r["native"] or t is None:
            continue
        faster = r[speed] * (1 + TWIN_TIE) < t if speed.endswith("_ms") else r[speed] > t * (1 + TWIN_TIE)
        if not faster:
            out.add(i)
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def profile_toml(profile) -> str:
    """A TargetProfile as the flat TOML load_target reads back (the same keys, no inheritance)."""
    d = profile.to_dict()
    lines = ["schema = 1"]
    for key in ("name", "description", "engine", "precision", "arch", "threads", "streams"):
        lines.append(f"{key} = {_toml_value(d[key])}")
    for name, spec in d["inputs"].items():
        lines += ["", f"[inputs.{json.dumps(name)}]", *(f"{k} = {_toml_value(v)}" for k, v in spec.items())]
    tables = {"preprocess": d["preprocess"] if profile.preprocess else None,
              "postprocess": d["postprocess"] if profile.postprocess_given else None,
              "validate": d["validate"], "quantize": d["quantize"], "engine_options": d["engine_options"]}
    for table, values in tables.items():
        values = {k: v for k, v in (values or {}).items() if v is not None}
        if values:
            lines += ["", f"[{table}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _held(r: dict) -> str:
    if not r.get("near_zero"):
        return "-"
    return f"{r['near_zero']}/{r['accuracy_samples']} (max-abs {r['near_zero_max_abs']:.2g})"


def table_md(result: dict) -> list[str]:
    rows = result["candidates"]
    lines = ["| candidate | session | threads | workers | worst-round p50 ms | p50 ms | worst-round frames/s | "
             "accuracy (cosine vs ORT, firing samples) | barely firing, held by max-abs | top-1 | int8 top-1 drop "
             "| load avg | front |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        front = ",".join(k for k, f in (("latency", result["pareto"]["latency"]),
                                         ("throughput", result["pareto"]["throughput"])) if i in f) or "-"
        if r.get("defers_to_native"):
            front += f" (defers to its native twin, not {TWIN_TIE:.0%} faster: {'/'.join(r['defers_to_native'])})"
        top1 = "-" if r["top1"] is None else f"{r['top1']:.3f}"
        drop = "-" if r["top1_drop"] is None else f"{r['top1_drop']:.3f}"
        mark = " **winner**" if i == result["winner_index"] else ""
        over = " (over the free cores: loaded timing)" if r.get("over_free_cores") else ""
        lines.append(f"| {r['candidate']}{mark} | {r['session']} | {r['threads'] or 'default'} | {r['workers']}{over} | "
                     f"{_ms(r['rank_ms'])} | {_ms(r['p50_ms'])} | {r['rank_fps']:.1f} | "
                     f"{accuracy(r):.{ACCURACY_DECIMALS}f} | {_held(r)} "
                     f"| {top1} | {drop} | {_ms(r['loadavg'])} | {front} |")
    return lines


def report_section(result: dict) -> str:
    w = result["winner"]
    lines = ["", "## Tuned on this machine (edgesdk tune)", "",
             f"Objective: {result['objective']}. Winner: {w['candidate']} on the {w['session']} session, "
             f"{w['threads'] or 'default'} engine thread(s), {w['workers']} stream worker(s): worst-round p50 "
             f"{w['rank_ms']:.2f} ms (median {w['p50_ms']:.2f} ms), {w['rank_fps']:.1f} frames/s in the worst round, "
             f"accuracy {accuracy(w):.{ACCURACY_DECIMALS}f} (cosine against ONNX Runtime of the samples that fire). "
             f"Ranked by the {result['rank_by']}. "
             f"{result['rounds']} interleaved round(s) on {result['frames']} real frames, {result['cores']} cores, "
             f"{result['free_cores']} free when timing began (others kept {result['load']['others_cores_before']:.2f} "
             f"busy); load average {result['load']['min']:.2f}-{result['load']['max']:.2f} during timing. "
             f"`tuned.toml` rebuilds this bundle; tuning.json holds the runtime settings load() applies.", ""]
    lines += table_md(result)
    held = [r for r in result["candidates"] if r.get("near_zero")]
    if held:
        lines += ["", f"Barely firing: a sample whose output stays near zero (cosine under the candidate's gate, max-abs "
                      f"within its atol {held[0]['near_zero_atol']:g}, as the int8 budget judges it) is held by its "
                      "max-abs and left out of the accuracy cosine, which says nothing there."]
    if result["failed"]:
        lines += ["", "Failed the gate or the build:", ""]
        lines += [f"- {f['candidate']}: {f['why']}" for f in result["failed"]]
    if result["skipped"]:
        lines += ["", "Not tried:", ""] + [f"- {s}" for s in result["skipped"]]
    if result["stopped_early"]:
        lines += ["", f"Stopped early: {result['stopped_early']}"]
    return "\n".join(lines) + "\n"


def summary_text(result: dict) -> str:
    w = result["winner"]
    out = [f"winner: {w['candidate']} ({w['session']}, threads {w['threads'] or 'default'}, workers {w['workers']}): "
           f"worst-round p50 {w['rank_ms']:.2f} ms (median {w['p50_ms']:.2f}), {w['rank_fps']:.1f} fps, "
           f"accuracy {accuracy(w):.{ACCURACY_DECIMALS}f}",
           f"ranked by the {result['rank_by']}; {result['free_cores']} of {result['cores']} cores free when timing began",
           f"bundle {result['out']} (profile {result['profile']})", ""]
    out += table_md(result)
    out += [f"failed: {f['candidate']}: {f['why']}" for f in result["failed"]]
    out += [f"not tried: {s}" for s in result["skipped"]]
    if result["stopped_early"]:
        out.append(f"stopped early: {result['stopped_early']}")
    return "\n".join(out)

