"""A bundle served by Triton (edgesdk serve, python backend) against the same bundle run in-process, same run.

    python benchmarks/bench_triton.py [--clients 8] [--requests 100] [--engine openvino|ncnn]

EfficientNet-Lite0 packaged with the triton-cpu profile twice: dynamic batching on (preferred 4, 8; 1 ms
queue delay) and off. Each repository is served by a real tritonserver on 127.0.0.1 and loaded by
`clients` concurrent edgesdk.client HTTP clients sending one real 1280x720 photo per request
(tests/triton_client_job.py, in a Python with tritonclient). The anchor is the same bundle in this process:
Model(frame) one at a time (latency) and Model.stream(frames, workers=clients) (throughput).
Ratios: served p50 / in-process p50 (latency, lower is better), served fps / in-process stream fps
(throughput, higher is better). The clients run on the same cores as the server: on a small machine their
HTTP encoding competes with inference, which a real deployment keeps on other machines.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_python(server: Path) -> str:
    import importlib.util

    if all(importlib.util.find_spec(m) for m in ("geventhttpclient", "grpc", "tritonclient")):
        return sys.executable
    return str(server.parent / "python")


def served(repo: Path, frames_npz: Path, clients: int, requests: int, work: Path) -> dict:
    from edgesdk.backends.triton.serve import Server

    with (work / f"{repo.name}.log").open("w") as log, Server(repo, free_port(), free_port(), log=log) as srv:
        job = {"kind": "load", "data": str(frames_npz), "out": "", "clients": clients, "requests": requests,
               "urls": {"http": f"127.0.0.1:{srv.http_port}", "grpc": srv.grpc_url}}
        (work / "job.json").write_text(json.dumps(job))
        r = subprocess.run([client_python(srv.server), str(ROOT / "tests" / "triton_client_job.py"),
                            str(work / "job.json")], capture_output=True, text=True, check=True)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    if got["error_count"]:
        raise SystemExit(f"{repo.name}: {got['error_count']} failed requests, e.g. {got['errors'][0]}")
    return got


def in_process(bundle: Path, frames: list, clients: int, requests: int) -> dict:
    import edgesdk

    with edgesdk.load(bundle) as m:
        for f in frames[:4]:
            m(f)
        lat = []
        for i in range(max(requests, 50)):
            t = time.perf_counter()
            m(frames[i % len(frames)])
            lat.append((time.perf_counter() - t) * 1e3)
        n = clients * requests
        stream = [frames[i % len(frames)] for i in range(n)]
        t = time.perf_counter()
        for _ in m.stream(stream, workers=clients):
            pass
        fps = n / (time.perf_counter() - t)
    return {"p50_ms": statistics.median(lat), "p99_ms": float(np.percentile(lat, 99)), "throughput": fps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=100, help="per client")
    ap.add_argument("--engine", default="openvino", choices=["openvino", "ncnn", "onnxruntime"])
    args = ap.parse_args()

    import edgesdk
    from edgesdk.backends.triton.serve import find_server
    from edgesdk.build.targets import TARGETS_DIR
    from edgesdk.device.preprocess import read_image
    from tools import models

    server = find_server()
    photos = models.eval_images()[:8]
    frames = [np.ascontiguousarray(np.resize(read_image(p), (720, 1280, 3))) for p in photos]
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        work = Path(tmp)
        np.savez(work / "frames.npz", **{f"frame{i}": f for i, f in enumerate(frames)})
        base = (TARGETS_DIR / "triton-cpu.toml").read_text().replace(
            'bundle_engine = "openvino"', f'bundle_engine = "{args.engine}"')
        if args.engine != "openvino":
            base = "\n".join(line for line in base.splitlines() if not line.startswith("hint"))
        repos = {}
        for label, batching in (("dynamic batching on", "true"), ("dynamic batching off", "false")):
            profile = work / f"{batching}.toml"
            profile.write_text(base.replace("dynamic_batching = true", f"dynamic_batching = {batching}"))
            repos[label] = work / f"repo-{batching}"
            edgesdk.package(models.efficientnet_lite0(), profile, repos[label])
        bundle = next(repos["dynamic batching on"].glob("*/1/bundle"))

        print(f"EfficientNet-Lite0 {args.engine} fp32, 1280x720 frames, {args.clients} clients x {args.requests} "
              f"requests, tritonserver {server}")
        anchor = in_process(bundle, frames, args.clients, args.requests)
        rows = [("in-process (Model / Model.stream)", anchor)]
        for label, repo in repos.items():
            rows.append((f"served over HTTP, {label}", served(repo, work / "frames.npz", args.clients,
                                                               args.requests, work)))
        print(f"{'case':<44}{'p50 ms':>9}{'p99 ms':>9}{'fps':>9}{'p50 ratio':>11}{'fps ratio':>11}")
        for name, r in rows:
            print(f"{name:<44}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['throughput']:>9.1f}"
                  f"{r['p50_ms'] / anchor['p50_ms']:>11.2f}{r['throughput'] / anchor['throughput']:>11.2f}")
        print("p50 of in-process is one frame at a time; served p50 is under the clients' concurrent load.")


if __name__ == "__main__":
    main()
