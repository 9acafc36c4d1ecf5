"""The on-device runtime end to end, against the engines' own Python APIs, same run.

    python benchmarks/bench_runtime.py [--rounds 5] [--iters 20] [--omp-wait passive|active]

P2 (latency): edgesdk.load(bundle)(frame) — native fused preprocessing into the engine's input,
inference, top-5 — against the engine's own Python package on the same EfficientNet-Lite0 artifact
with OpenCV preprocessing (cv2.dnn.blobFromImage: resize, BGR->RGB, (x - 127) / 128, NCHW in one
call) and the same top-5, at the same engine threads. ncnn anchor: ncnn.Net + Extractor, the blob
wrapped zero-copy; OpenVINO anchor: compiled model + infer request, inputs shared, output read in
place. Rows per engine-thread count (the settings sweep); ratio = ours / anchor (lower is better).
The preprocessing share of each side is printed.

P3 (throughput on all cores): Model.stream(frames, workers=N) against the best sequential loop of
Model(frame) calls (engine threads 1 or all cores, whichever is faster here); ratio = stream fps /
best sequential fps (higher is better).

Frames are real photos scaled to 1280x720 (a camera frame). Timings mean little beside other load:
the CPU time other processes took during each part is printed. Both ncnn builds (ours, linked into
edgesdk._native, and the ncnn wheel) use libgomp; its waiting policy (--omp-wait, set for every
engine in the process before any loads) matters: libgomp's default spins briefly, then sleeps;
PASSIVE sleeps at once (steadier beside other load, slower multi-threaded runs on an idle machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

X86_NCNN = """schema = 1
name = "x86-ncnn-fp32"
description = "x86-64 CPU with ncnn FP32 (benchmark profile)"
engine = "ncnn"
precision = "fp32"
arch = "x86_64"
threads = {threads}
[validate]
min_cosine = 0.9999
"""


def frames_720p(cv2, n: int):
    from edgesdk.device.preprocess import read_image
    from tools import models

    return [cv2.resize(read_image(p), (1280, 720), interpolation=cv2.INTER_AREA) for p in models.eval_images()[:n]]


def topk(logits, labels, k=5):
    import numpy as np

    flat = logits.reshape(-1)
    idx = np.argpartition(flat, -k)[-k:]
    idx = idx[np.argsort(flat[idx])[::-1]]
    return [(int(i), labels[i], float(flat[i])) for i in idx]


def blob(cv2, frame):
    return cv2.dnn.blobFromImage(frame, 1 / 128.0, (224, 224), (127, 127, 127), swapRB=True)


def ncnn_anchor(cv2, bundle: Path, threads: int, labels):
    import ncnn
    import numpy as np

    from edgesdk.backends.base import Artifact

    art = Artifact.load(bundle / "model")
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.num_threads = threads
    net.load_param(str(art.path(art.meta["param"])))
    net.load_model(str(art.path(art.meta["bin"])))
    blob_in, blob_out = art.meta["inputs"]["images"]["blob"], art.meta["outputs"]["logits"]["blob"]

    def run(frame):
        x = blob(cv2, frame)
        ex = net.create_extractor()
        ex.input(blob_in, ncnn.Mat(x[0]))  # x stays referenced until extract returns
        _, out = ex.extract(blob_out)
        return topk(np.array(out), labels)

    return run


def openvino_anchor(cv2, bundle: Path, threads: int, labels):
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(core.read_model(str(bundle / "model" / "model.xml")), "CPU", config)
    req = compiled.create_infer_request()

    def run(frame):
        req.infer({0: blob(cv2, frame)}, share_inputs=True, share_outputs=True)
        return topk(req.get_output_tensor(0).data, labels)

    return run


class OtherLoad:
    """Cores' worth of CPU other processes used while the block ran (Linux /proc/stat; None elsewhere):
    timings taken beside other load say little about the engines."""

    def __enter__(self):
        self.busy, self.cpu, self.wall = self._busy(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = self._busy()
        if busy is None or self.busy is None:
            self.cores = None
            return
        hz = os.sysconf("SC_CLK_TCK")
        ours = time.process_time() - self.cpu
        self.cores = max(0.0, ((busy - self.busy) / hz - ours) / (time.perf_counter() - self.wall))

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(v) - v[3] - v[4]  # all but idle and iowait

    def __str__(self):
        return "n/a" if self.cores is None else f"{self.cores:.2f} cores"


def median_ms(fn, frames, iters):
    times = []
    for k in range(iters):
        f = frames[k % len(frames)]
        t = time.perf_counter()
        fn(f)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def latency(fns: dict, frames, rounds: int, iters: int) -> dict:
    """name -> median ms, the callables interleaved round by round so machine noise hits all alike."""
    for fn in fns.values():
        for f in frames[:3]:
            fn(f)
    got = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            got[name].append(median_ms(fn, frames, iters))
    return {name: statistics.median(v) for name, v in got.items()}


def throughput(fns: dict, rounds: int) -> tuple[dict, dict]:
    """(name -> frames per second, name -> process CPU ms per frame), medians over interleaved rounds;
    each fn processes its frames and returns how many. CPU time per frame tells the work apart from
    the share of the machine this process got (other load on the machine lowers fps, not CPU ms)."""
    for fn in fns.values():
        fn()
    fps, cpu = {name: [] for name in fns}, {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            n = fn()
            fps[name].append(n / (time.perf_counter() - t))
            cpu[name].append((time.process_time() - c) * 1e3 / n)
    return ({name: statistics.median(v) for name, v in fps.items()},
            {name: statistics.median(v) for name, v in cpu.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20, help="frames per latency round")
    ap.add_argument("--stream-frames", type=int, default=96, help="frames per throughput round")
    ap.add_argument("--omp-wait", choices=("default", "passive", "active"), default="default")
    ap.add_argument("--engines", default="ncnn,openvino")
    ap.add_argument("--parts", default="p2,p3", help="which measurements: p2, p3 or both")
    ap.add_argument("--work", type=Path, help="keep the bundles here (default: a temporary directory)")
    args = ap.parse_args()
    if args.omp_wait != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()  # before any OpenMP runtime loads

    import cv2
    import ncnn
    import openvino

    import edgesdk
    from edgesdk import _native
    from edgesdk.device.bench import cpu_name
    from tools import models

    cores = os.cpu_count() or 1
    engines = [e for e in args.engines.split(",") if e]
    info = _native.build_info()
    print(f"# {cpu_name()}, {cores} cores; edgesdk {edgesdk.__version__}; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(libgomp default)')}\n# native engines {info['engines']}: ncnn {info['ncnn'] or '-'}; "
          f"anchors: ncnn wheel {ncnn.__version__}, openvino {openvino.get_version()}")
    frames = frames_720p(cv2, 8)
    labels = models.imagenet_labels()
    onnx = models.efficientnet_lite0()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgesdk-bench-runtime-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# EfficientNet-Lite0 fp32, frames {frames[0].shape[1]}x{frames[0].shape[0]} BGR (real photos); "
          f"bundles in {work}\n")

    bundles = {}
    for engine in engines:
        out = work / engine
        if not (out / "manifest.json").is_file():
            target = "x86-openvino" if engine == "openvino" else work / "x86-ncnn.toml"
            if engine == "ncnn":
                target.write_text(X86_NCNN.format(threads=cores))
            edgesdk.package(onnx, target, out, calib=models.calibration_images(4))
        bundles[engine] = out

    parts = set(args.parts.split(","))
    if "p2" in parts:
        p2(args, engines, bundles, frames, labels, cores, cv2)
    if "p3" in parts:
        p3(args, engines, bundles, frames, cores)


def p2(args, engines, bundles, frames, labels, cores, cv2) -> None:
    import edgesdk
    from edgesdk.device.preprocess import preprocess

    print("P2: latency, edgesdk.load(bundle)(frame) vs the engine's Python API + OpenCV preprocessing")
    print(f"{'engine':<10}{'threads':>8}{'anchor ms':>11}{'ours ms':>10}{'ratio':>8}{'anchor pre':>12}"
          f"{'ours pre':>10}   goal <= 1.0")
    with OtherLoad() as other:
        for engine in engines:
            anchor_of = ncnn_anchor if engine == "ncnn" else openvino_anchor
            for threads in sorted({1, cores}):
                with edgesdk.load(bundles[engine], threads=threads) as model:
                    assert model.native, f"{engine}: the native engine is not built"
                    spec = model.spec
                    fns = {"anchor": anchor_of(cv2, bundles[engine], threads, labels), "ours": model,
                           "anchor_pre": lambda f: blob(cv2, f), "ours_pre": lambda f: preprocess(f, spec)}
                    ms = latency(fns, frames, args.rounds, args.iters)
                print(f"{engine:<10}{threads:>8}{ms['anchor']:>11.2f}{ms['ours']:>10.2f}"
                      f"{ms['ours'] / ms['anchor']:>8.3f}{ms['anchor_pre']:>7.2f} "
                      f"{100 * ms['anchor_pre'] / ms['anchor']:>3.0f}%{ms['ours_pre']:>5.2f} "
                      f"{100 * ms['ours_pre'] / ms['ours']:>3.0f}%")
    print(f"  (other processes used {other} on average during P2)\n")


def p3(args, engines, bundles, frames, cores) -> None:
    import edgesdk

    print(f"P3: throughput on {cores} cores, Model.stream(frames, workers=N) vs the best sequential loop")
    print(f"{'engine':<10}{'seq 1 thr':>11}{f'seq {cores} thr':>11}{'stream':>10}{'workers x thr':>15}{'ratio':>8}"
          f"   goal >= 1.1   (fps; CPU ms per frame: seq 1, seq {cores}, stream)")
    workers = cores  # the benchmark profile's threads, one engine thread per worker
    other = OtherLoad().__enter__()
    for engine in engines:
        n = args.stream_frames
        batch = [frames[k % len(frames)] for k in range(n)]
        with edgesdk.load(bundles[engine], threads=1) as m1, \
                edgesdk.load(bundles[engine], threads=cores) as mc:
            def seq(m):
                def run():
                    for f in batch:
                        m(f)
                    return n
                return run

            def stream(m, workers):
                def run():
                    return sum(1 for _ in m.stream(batch, workers=workers))
                return run

            fps, cpu = throughput({"seq1": seq(m1), "seqc": seq(mc), "stream": stream(mc, workers)}, args.rounds)
        best = max(fps["seq1"], fps["seqc"])
        print(f"{engine:<10}{fps['seq1']:>11.1f}{fps['seqc']:>11.1f}{fps['stream']:>10.1f}"
              f"{f'{workers} x {max(1, cores // workers)}':>15}{fps['stream'] / best:>8.3f}"
              f"{'':>17}{cpu['seq1']:.1f}, {cpu['seqc']:.1f}, {cpu['stream']:.1f}")
    other.__exit__(None, None, None)
    print(f"  (other processes used {other} on average during P3)")


if __name__ == "__main__":
    main()
