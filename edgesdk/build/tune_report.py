"""What `edgesdk tune` writes beside the winner: the Pareto fronts, the profile TOML that reproduces it,
and the report section. Build side."""
from __future__ import annotations

import json


def pareto(rows: list[dict], speed: str) -> list[int]:
    """Indices of `rows` no other row beats on both `speed` ("p50_ms": lower is better, "fps": higher)
    and accuracy (cosine against ONNX Runtime, higher is better)."""
    sign = 1 if speed == "p50_ms" else -1
    front = []
    for i, a in enumerate(rows):
        beaten = any(sign * b[speed] <= sign * a[speed] and b["cosine_min"] >= a["cosine_min"]
                     and (sign * b[speed] < sign * a[speed] or b["cosine_min"] > a["cosine_min"])
                     for j, b in enumerate(rows) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: sign * rows[i][speed])


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


def table_md(result: dict) -> list[str]:
    rows = result["candidates"]
    lines = ["| candidate | session | threads | workers | p50 ms | frames/s | cosine vs ORT | top-1 | int8 top-1 drop "
             "| load avg | front |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        front = ",".join(k for k, f in (("latency", result["pareto"]["latency"]),
                                         ("throughput", result["pareto"]["throughput"])) if i in f) or "-"
        top1 = "-" if r["top1"] is None else f"{r['top1']:.3f}"
        drop = "-" if r["top1_drop"] is None else f"{r['top1_drop']:.3f}"
        mark = " **winner**" if i == result["winner_index"] else ""
        lines.append(f"| {r['candidate']}{mark} | {r['session']} | {r['threads'] or 'default'} | {r['workers']} | "
                     f"{_ms(r['p50_ms'])} | {r['fps']:.1f} | {r['cosine_min']:.5f} | {top1} | {drop} | "
                     f"{_ms(r['loadavg'])} | {front} |")
    return lines


def report_section(result: dict) -> str:
    w = result["winner"]
    lines = ["", "## Tuned on this machine (edgesdk tune)", "",
             f"Objective: {result['objective']}. Winner: {w['candidate']} on the {w['session']} session, "
             f"{w['threads'] or 'default'} engine thread(s), {w['workers']} stream worker(s): p50 {w['p50_ms']:.2f} ms, "
             f"{w['fps']:.1f} frames/s, cosine {w['cosine_min']:.5f} against ONNX Runtime. "
             f"{result['rounds']} interleaved round(s) on {result['frames']} real frames, {result['cores']} cores; "
             f"load average {result['load']['min']:.2f}-{result['load']['max']:.2f} during timing. "
             f"`tuned.toml` rebuilds this bundle; tuning.json holds the runtime settings load() applies.", ""]
    lines += table_md(result)
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
           f"p50 {w['p50_ms']:.2f} ms, {w['fps']:.1f} fps, cosine {w['cosine_min']:.5f}",
           f"bundle {result['out']} (profile {result['profile']})", ""]
    out += table_md(result)
    out += [f"failed: {f['candidate']}: {f['why']}" for f in result["failed"]]
    out += [f"not tried: {s}" for s in result["skipped"]]
    if result["stopped_early"]:
        out.append(f"stopped early: {result['stopped_early']}")
    return "\n".join(out)

