"""The bundle's report.html: one self-contained page (inline SVG and a data-URI PNG, no scripts, nothing
fetched) with the parity table, converted-vs-fp32 scatter, the int8 budget and per-layer errors, the
latency histogram with p50/p90/p99 and the pre/infer/post split, and a calibration photo as the model
sees it (preprocessing applied, normalisation undone for display)."""
from __future__ import annotations

import base64
import html
import struct
import zlib

import numpy as np

STYLE = ("body{font:14px sans-serif;margin:24px;max-width:960px;color:#222}table{border-collapse:collapse}"
         "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
         ".ok{color:#170}.bad{color:#b00}svg{background:#fafafa;border:1px solid #ddd}")


def _e(x) -> str:
    return html.escape(str(x))


def _near_zero(check: dict) -> str:
    """Samples under the cosine budget whose output barely fires, passed on max-abs (build.budget)."""
    if not check.get("near_zero"):
        return "-"
    return (f"{check['near_zero']} (max abs {check['max_abs']:.3g} &lt;= {check['atol']:g}); judged cosine min "
            f"{_num(check.get('judged_cosine_min'), '.4f')}")


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def png_data_uri(rgb: np.ndarray) -> str:
    """An HxWx3 uint8 RGB image as a data:image/png URI (zlib + the PNG chunk layout; no image library)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def model_view(x: np.ndarray, spec: dict) -> np.ndarray:
    """A preprocessed input [1, C, H, W] or [1, H, W, C] back to displayable RGB uint8: the model's
    normalisation undone (x * std + mean), its channel order turned to RGB."""
    img = x[0].transpose(1, 2, 0) if spec["layout"] == "nchw" else x[0]
    img = img.astype(np.float64) * np.asarray(spec["std"]) + np.asarray(spec["mean"])
    if spec["color"] == "bgr":
        img = img[:, :, ::-1]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _scatter(ref: np.ndarray, got: np.ndarray, size: int = 320, points: int = 2000) -> str:
    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    if ref.size > points:
        pick = np.random.default_rng(0).choice(ref.size, points, replace=False)
        ref, got = ref[pick], got[pick]
    lo, hi = float(min(ref.min(), got.min())), float(max(ref.max(), got.max()))
    span = (hi - lo) or 1.0
    px = lambda v: 20 + (v - lo) / span * (size - 40)  # noqa: E731
    dots = "".join(f'<circle cx="{px(a):.1f}" cy="{size - px(b):.1f}" r="1.6"/>' for a, b in zip(ref, got))
    return (f'<svg width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg">'
            f'<line x1="20" y1="{size - 20}" x2="{size - 20}" y2="20" stroke="#bbb"/>'
            f'<g fill="#2467b3" fill-opacity="0.6">{dots}</g>'
            f'<text x="24" y="{size - 6}" font-size="11">fp32 (onnxruntime) {lo:.3g} .. {hi:.3g}</text>'
            f'<text x="4" y="14" font-size="11">converted</text></svg>')


def _histogram(values: list[float], b: dict, w: int = 640, h: int = 200, bins: int = 30) -> str:
    counts, edges = np.histogram(values, bins=bins)
    lo, hi, top = float(edges[0]), float(edges[-1]), max(int(counts.max()), 1)
    x = lambda v: 30 + (v - lo) / ((hi - lo) or 1e-9) * (w - 60)  # noqa: E731
    bars = "".join(f'<rect x="{x(edges[i]):.1f}" y="{h - 30 - c / top * (h - 50):.1f}" '
                   f'width="{max(x(edges[i + 1]) - x(edges[i]) - 1, 1):.1f}" height="{c / top * (h - 50):.1f}"/>'
                   for i, c in enumerate(counts))
    marks = []
    for i, (key, col) in enumerate((("p50_ms", "#170"), ("p90_ms", "#c70"), ("p99_ms", "#b00"))):
        at = x(b[key])
        anchor = "end" if at > w - 110 else "start"  # keep the label inside the picture
        marks.append(f'<line x1="{at:.1f}" y1="14" x2="{at:.1f}" y2="{h - 30}" stroke="{col}"/><text '
                     f'x="{at + 2:.1f}" y="{12 + 12 * i}" font-size="11" fill="{col}" text-anchor="{anchor}">'
                     f'{key[:3]} {b[key]:.2f} ms</text>')
    marks = "".join(marks)
    return (f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg"><g fill="#2467b3">{bars}</g>{marks}'
            f'<text x="30" y="{h - 10}" font-size="11">{lo:.2f} ms</text>'
            f'<text x="{w - 90}" y="{h - 10}" font-size="11">{hi:.2f} ms</text></svg>')


def _split(b: dict, w: int = 640) -> str:
    parts = [("preprocess", b["pre_ms"], "#6a9"), ("inference", b["infer_ms"], "#2467b3"),
             ("postprocess", b["post_ms"], "#c70")]
    total = sum(p[1] for p in parts) or 1.0
    x, rects = 0.0, []
    for name, ms, col in parts:
        width = ms / total * w
        rects.append(f'<rect x="{x:.1f}" y="0" width="{width:.1f}" height="22" fill="{col}">'
                     f'<title>{name} {ms:.2f} ms</title></rect>')
        x += width
    legend = ", ".join(f"{n} {ms:.2f} ms" for n, ms, _ in parts)
    return f'<svg width="{w}" height="22" xmlns="http://www.w3.org/2000/svg">{"".join(rects)}</svg><p>{legend}</p>'


def report_html(manifest: dict, latencies: list[float] | None, view: np.ndarray | None = None,
                scatter: tuple[np.ndarray, np.ndarray, str] | None = None) -> str:
    """view: the model's input as RGB uint8 (model_view); scatter: (fp32 output, converted output, name)."""
    name = manifest["source"]["model"]
    t = manifest["target"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(name)}: {_e(t['name'])} "
           f"{_e(manifest['backend'])} {_e(manifest['precision'])}</title><style>{STYLE}</style></head><body>",
           f"<h1>{_e(name)}</h1><p>{_e(t['name'])}: {_e(manifest['backend'])} {_e(manifest['precision'])} "
           f"({_e(t.get('arch', ''))}), built with edgesdk {_e(manifest['versions']['edgesdk'])}</p>"]
    if manifest.get("settings_from"):
        out.append("<h2>Settings</h2><ul>" + "".join(f"<li>{_e(s)}</li>" for s in manifest["settings_from"]) + "</ul>")
    v = manifest["validation"]
    out.append("<h2>Parity against ONNX Runtime</h2>")
    if v.get("outputs"):
        rows = "".join(
            f"<tr><td>{_e(o['name'])}</td><td>{o['cosine_min']:.6f}</td><td>{o['max_abs']:.3g}</td>"
            f"<td>{o['max_rel']:.3g}</td><td>{_num(o['top1_agreement'], '.3f')}"
            f"</td><td class='{'ok' if o['passed'] else 'bad'}'>{'ok' if o['passed'] else 'outside'}</td></tr>"
            for o in v["outputs"])
        out.append("<table><tr><th>output</th><th>cosine min</th><th>max abs</th><th>max rel</th><th>top-1</th>"
                   f"<th>result</th></tr>{rows}</table>")
    else:
        out.append(f"<p>Not validated on the build machine: {_e('; '.join(v.get('notes', [])))}</p>")
    if scatter is not None:
        ref, got, out_name = scatter
        out.append(f"<h3>Converted vs fp32, output {_e(out_name)} (one sample)</h3>{_scatter(ref, got)}")
    q = manifest.get("quantization")
    if q and q.get("steps"):
        rows = "".join(
            f"<tr><td>{_e(s.get('method', q['method']))}</td><td>{len(s['float_nodes'])}</td>"
            f"<td>{_num(s['check']['top1_drop'], '.3f')}</td><td>{s['check'].get('decided', '-')} "
            f"{_e(s['check'].get('per', 'photo'))}s</td><td>{s['check']['cosine_min']:.4f}</td>"
            f"<td>{_near_zero(s['check'])}</td><td>{s['check'].get('samples')}</td>"
            f"<td class='{'ok' if s['check']['passed'] else 'bad'}'>{'held' if s['check']['passed'] else 'missed'}"
            f"</td></tr>" for s in q["steps"])
        out.append(f"<h2>INT8 accuracy budget</h2><p>{_e(q['method'])}, {q['calibration_images']} calibration images; "
                   f"budget {_e(q['budget'])}</p><table><tr><th>method</th><th>float layers</th><th>top-1 drop</th>"
                   f"<th>decided</th><th>cosine min</th><th>barely firing, held by max-abs</th><th>images</th>"
                   f"<th>budget</th></tr>{rows}</table>")
        if q.get("sensitivity"):
            worst = max(s for _, s in q["sensitivity"]) or 1.0
            rows = "".join(f"<tr><td style='text-align:left'>{_e(n)}</td><td>{s:.4g}</td><td style='text-align:left'>"
                           f"<svg width='200' height='10'><rect width='{200 * s / worst:.1f}' height='10' "
                           f"fill='#b00'/></svg></td><td>{'float' if n in q['fallback'] else ''}</td></tr>"
                           for n, s in q["sensitivity"])
            out.append("<h3>Per-layer error (int8 alone in that layer, 1 - cosine)</h3><table><tr><th>layer</th>"
                       f"<th>error</th><th></th><th>kept</th></tr>{rows}</table>")
    b = manifest.get("benchmark")
    out.append("<h2>Latency on the build machine</h2>")
    if b:
        out.append(f"<p>p50 {b['p50_ms']:.2f} ms, p90 {b['p90_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms; "
                   f"{b['throughput_fps']:.1f} frames/s</p>")
        if latencies:
            out.append(_histogram(latencies, b))
        out.append(_split(b))
    elif manifest.get("benchmark_skipped"):
        skipped = manifest["benchmark_skipped"]
        out.append(f"<p>{_e(skipped[0].upper() + skipped[1:])}.</p>")
    else:
        out.append("<p>The engine does not run on the build machine.</p>")
    if view is not None:
        out.append(f"<h2>A calibration photo as the model sees it</h2><p>{view.shape[1]}x{view.shape[0]}, "
                   f"preprocessing applied, normalisation undone for display</p>"
                   f"<img alt='model input' src='{png_data_uri(view)}'>")
    out.append("</body></html>")
    return "\n".join(out)
