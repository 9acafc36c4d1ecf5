"""Client side of tests/test_triton_serve.py and benchmarks/bench_triton.py, run in a Python that has
tritonclient[http,grpc] (the project's or the Triton environment's): edgesdk.client against a live server.

    python tests/triton_client_job.py JOB.json      -> prints one JSON line; arrays go to JOB["out"] (.npz)

Jobs: parity (frames and tensors, HTTP and gRPC), load (N clients x M requests in threads: errors and
latencies), faults (a wrong shape, a wrong dtype, both inputs: the errors, then a good request).
"""
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesdk.client import Client  # noqa: E402
from edgesdk.errors import EdgeSDKError  # noqa: E402


def parity(job, frames, tensors):
    arrays, top1 = {}, {}
    for proto, url in job["urls"].items():
        with Client(url, protocol=proto) as c:
            for i, f in enumerate(frames):
                r = c(f)
                arrays[f"{proto}_frame_{i}"] = r[job["output"]]
                top1[f"{proto}_frame_{i}"] = r["topk"][0]["index"]
            for i, t in enumerate(tensors):
                r = c.infer({job["input"]: t})
                arrays[f"{proto}_tensor_{i}"] = r[job["output"]]
                top1[f"{proto}_tensor_{i}"] = r["topk"][0]["index"]
    np.savez(job["out"], **arrays)
    return {"top1": top1}


def load(job, frames, tensors):
    clients, requests = job["clients"], job["requests"]
    errors, latencies = [], []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def worker(k):
        proto = "grpc" if job.get("protocol") == "grpc" else "http"
        with Client(job["urls"][proto], protocol=proto) as c:
            start.wait()
            for j in range(requests):
                t0 = time.perf_counter()
                try:
                    c(frames[(k + j) % len(frames)])
                except Exception as e:  # counted and reported, not raised: the run goes on
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    ms = np.array(latencies) * 1e3
    return {"errors": errors[:5], "error_count": len(errors), "ok": len(latencies), "seconds": seconds,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "throughput": len(latencies) / seconds}


def faults(job, frames, tensors):
    out = {}
    with Client(job["urls"]["http"], protocol="http") as c:
        bad = {"shape": {job["input"]: tensors[0][:, :, :100]}, "dtype": {job["input"]: tensors[0].astype(np.float64)},
               "frame_dtype": None}
        for name, feeds in bad.items():
            try:
                c(frames[0].astype(np.float32)) if feeds is None else c.infer(feeds)
                out[name] = None
            except EdgeSDKError as e:
                out[name] = str(e)
        try:  # both inputs at once: the model's own check
            c._infer([c._input("FRAMES", frames[0][None]), c._input(job["input"], tensors[0])])
            out["both"] = None
        except EdgeSDKError as e:
            out["both"] = str(e)
        out["after"] = int(c(frames[0])["topk"][0]["index"])
    return out


def main():
    job = json.loads(Path(sys.argv[1]).read_text())
    data = np.load(job["data"])
    frames = [data[k] for k in sorted(data.files) if k.startswith("frame")]
    tensors = [data[k] for k in sorted(data.files) if k.startswith("tensor")]
    print(json.dumps({"parity": parity, "load": load, "faults": faults}[job["kind"]](job, frames, tensors)))


if __name__ == "__main__":
    main()
