"""The RKNN converter's worker: runs inside the rknn-toolkit2 environment (tools/rknn_env.sh), never in
edgesdk's own process, and imports nothing of edgesdk (that environment has numpy 1.26 and onnx 1.18).

    <rknn env>/bin/python worker.py WORKDIR

One JSON request per line on stdin, one JSON reply per line on the original stdout; everything the
toolkit prints (Python or C) goes to stderr, which the caller keeps in WORKDIR/worker.log. Tensors
travel as .npy files. The worker holds the model it last built in the toolkit's x86 simulator,
because the toolkit can only simulate a model it has just built, never a .rknn loaded from disk.

Requests (`op`):
  build    ONNX -> .rknn: int8 (w8a8, calibration .npy files) or fp16; ONNX node names in `float_nodes`
           stay float16 through the toolkit's hybrid quantization; then the simulator starts.
  run      inputs (.npy, the model's own layout, raw pixels where mean/std are folded in) -> outputs.
  probe    compat's live check: load_onnx + build without quantization (fp16) for `platform`; nothing is
           exported and no simulator starts. Replies whether it built and the toolkit's error, if any; what the
           compiler could not lower it writes to the log, which the caller reads.
  analyse  accuracy_analysis of the built int8 model on a few inputs in a temporary directory (it dumps
           every tensor as text, ~340 MB per image); only its per-layer error table comes back.
  quit
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

# edgesdk's [quantize] method -> the toolkit's quantized_algorithm (it has no ACIQ: mmse is its clipping search)
ALGORITHMS = {"minmax": "normal", "kl": "kl_divergence", "aciq": "mmse"}
# ops the NPU fuses into the convolution before them, so keeping one float means keeping its Conv float too
FUSED_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "PRelu"}


class Worker:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.rknn = None
        self.built = None  # the build request the simulator holds

    # ------------------------------------------------------------------ build
    def _new(self, req: dict, load: bool = True):
        from rknn.api import RKNN

        if self.rknn is not None:
            self.rknn.release()
        self.rknn = RKNN(verbose=False)
        cfg = dict(target_platform=req["platform"], optimization_level=3)
        if req.get("mean") is not None:
            cfg.update(mean_values=req["mean"], std_values=req["std"])
        if req["precision"] == "int8":
            cfg.update(quantized_dtype="w8a8", quantized_method="channel",
                       quantized_algorithm=ALGORITHMS[req.get("method", "minmax")])
        check(self.rknn.config(**cfg), "config")
        if load:
            check(self.rknn.load_onnx(req["onnx"], inputs=req["inputs"], input_size_list=req["shapes"]),
                  f"load_onnx {req['onnx']}")

    def build(self, req: dict) -> dict:
        t0 = time.perf_counter()
        self.built = None
        self._new(req)
        pairs = []
        work = tempfile.mkdtemp(prefix="build-", dir=self.workdir)
        try:
            dataset = None
            if req["precision"] == "int8":
                dataset = os.path.join(work, "dataset.txt")
                # one line per sample: the .npy of each model input, space-separated
                with open(dataset, "w") as f:
                    f.writelines(" ".join(s) + "\n" for s in req["dataset"])
            if req["precision"] == "int8" and req.get("float_nodes"):
                pairs = float_pairs(req["onnx"], req["float_nodes"])
                cwd = os.getcwd()
                os.chdir(work)  # step 1 writes <model>.model/.data/.quantization.cfg into the current directory
                try:
                    check(self.rknn.hybrid_quantization_step1(dataset=dataset), "hybrid_quantization_step1")
                    stem = os.path.splitext(os.path.basename(req["onnx"]))[0]
                    pairs = keep_float(f"{stem}.quantization.cfg", pairs)
                    self._new(req, load=False)  # step 2 on a fresh toolkit object, which reads step 1's files
                    check(self.rknn.hybrid_quantization_step2(
                        model_input=f"{stem}.model", data_input=f"{stem}.data",
                        model_quantization_cfg=f"{stem}.quantization.cfg"), "hybrid_quantization_step2")
                finally:
                    os.chdir(cwd)
            else:
                check(self.rknn.build(do_quantization=req["precision"] == "int8", dataset=dataset), "build")
            check(self.rknn.export_rknn(req["out"]), f"export_rknn {req['out']}")
            build_s = time.perf_counter() - t0
            check(self.rknn.init_runtime(), "init_runtime (simulator)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.built = req
        return {"seconds": round(build_s, 3), "float_pairs": pairs, "toolkit": toolkit_version()}

    def probe(self, req: dict) -> dict:
        self.built = None
        try:
            self._new({**req, "precision": "fp16"})
            check(self.rknn.build(do_quantization=False), "build")
            error = ""
        except Exception as e:  # the verdict, not a failure of the request
            traceback.print_exc()
            error = str(e).strip() or type(e).__name__
        finally:
            flush_c_stdio()  # the compiler's "No lowering found" lines are C stdio, buffered in the log
        return {"built": not error, "error": error[-4000:], "toolkit": toolkit_version()}

    # ------------------------------------------------------------------ run / analyse
    def run(self, req: dict) -> dict:
        if self.built is None:
            raise RuntimeError("no model built in this worker")
        arrays = [np.load(p) for p in req["inputs"]]
        fmts = [req["formats"][i] for i in range(len(arrays))]
        outs = self.rknn.inference(inputs=arrays, data_format=fmts)
        if outs is None:
            raise RuntimeError("inference returned nothing (see the toolkit's log)")
        paths = []
        for i, o in enumerate(outs):
            p = os.path.join(req["out_dir"], f"out{i}.npy")
            np.save(p, np.asarray(o, dtype=np.float32))
            paths.append(p)
        return {"outputs": paths}

    def analyse(self, req: dict) -> dict:
        if self.built is None or self.built["precision"] != "int8":
            raise RuntimeError("accuracy_analysis needs an int8 model built in this worker")
        snap = tempfile.mkdtemp(prefix="snapshot-", dir=self.workdir)
        try:
            t0 = time.perf_counter()
            check(self.rknn.accuracy_analysis(inputs=req["inputs"], output_dir=snap), "accuracy_analysis")
            with open(os.path.join(snap, "error_analysis.txt")) as f:
                table = f.read()
        finally:
            shutil.rmtree(snap, ignore_errors=True)  # the tensor dumps: hundreds of MB
        return {"table": table, "rows": parse_table(table), "seconds": round(time.perf_counter() - t0, 3)}


def check(ret, what: str) -> None:
    if ret != 0:
        raise RuntimeError(f"rknn-toolkit2 {what} failed (returned {ret}); see the toolkit's log")


def flush_c_stdio() -> None:
    import ctypes

    ctypes.CDLL(None).fflush(None)


def toolkit_version() -> str:
    from importlib.metadata import version

    return version("rknn-toolkit2")


_ROW = re.compile(r"^\[(\w+)\]\s+(\S+)\s+([-\d.]+)\s*\|\s*([-\d.naif]+)\s+([-\d.]+)\s*\|\s*([-\d.naif]+)")


def parse_table(table: str) -> list[dict]:
    """error_analysis.txt rows: [op] tensor  entire cos | euc   single cos | euc. Rows without figures
    are layers fused into the next one (a Conv before its activation): reported with the row that has them."""
    rows, fused = [], []
    for line in table.splitlines():
        m = _ROW.match(line.strip())
        if m:
            op, tensor, ec, ee, sc, se = m.groups()
            rows.append({"op": op, "tensor": tensor, "fused": fused, "entire_cos": float(ec),
                         "entire_euc": float(ee), "single_cos": float(sc), "single_euc": float(se)})
            fused = []
        else:
            m = re.match(r"^\[(\w+)\]\s+(\S+)\s*$", line.strip())
            if m:
                fused.append(m.group(2))
    return rows


def float_pairs(onnx_path: str, nodes: list[str]) -> list[list[str]]:
    """The output tensors of each ONNX node to keep float16, an activation widened to the convolution
    it is fused with (the toolkit's layers are keyed by output tensor)."""
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    consts = {i.name for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    missing = [n for n in nodes if n not in by_name]
    if missing:
        raise RuntimeError(f"nodes to keep in float {missing} are not in {onnx_path}")
    pairs = []
    for name in nodes:
        node = by_name[name]
        data = [i for i in node.input if i and i not in consts and (i not in producer or producer[i].op_type != "Constant")]
        if not data:
            continue
        head = node
        prev = producer.get(data[0])
        if node.op_type in FUSED_ACTIVATIONS and prev is not None and prev.op_type == "Conv" and consumers[data[0]] == 1:
            head = prev
        pair = list(dict.fromkeys([head.output[0], node.output[0]]))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def keep_float(cfg_path: str, pairs: list[list[str]]) -> list[list[str]]:
    """Mark the layers producing each group's tensors float16 in step 1's config (custom_quantize_layers,
    keyed by output tensor). The toolkit's optimizer renames or fuses some ONNX tensors away: only tensors
    its graph still has (its quantize_parameters) can be marked; a pair with none is an error."""
    from ruamel.yaml import YAML

    with open(cfg_path) as f:
        text = f.read()
    known = set(YAML(typ="safe").load(text).get("quantize_parameters") or {})
    marks, kept = [], []
    for pair in pairs:
        tensors = [t for t in pair if t in known]
        if not tensors:
            raise RuntimeError(f"none of {pair} is a tensor of the toolkit's optimized graph; cannot keep it float")
        marks += [f"    {json.dumps(t)}: float16\n" for t in tensors]
        kept.append(pair)
    # a text edit: re-dumping the YAML reformats the recorded scales, which step 2 then refuses as modified
    head = re.search(r"^custom_quantize_layers:.*\n", text, re.M)
    if head is None:
        raise RuntimeError(f"{cfg_path}: no custom_quantize_layers section")
    text = text[:head.start()] + "custom_quantize_layers:\n" + "".join(dict.fromkeys(marks)) + text[head.end():]
    with open(cfg_path, "w") as f:
        f.write(text)
    return kept


def main() -> int:
    workdir = sys.argv[1]
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the toolkit's own prints (Python and C) must not reach the reply channel
    sys.stdout = sys.stderr
    worker = Worker(workdir)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        op = req.get("op")
        if op == "quit":
            break
        try:
            ops = {"build": worker.build, "run": worker.run, "analyse": worker.analyse, "probe": worker.probe}
            result = ops[op](req)
            answer = {"ok": True, **result}
        except Exception as e:  # reported to the caller, which raises an EdgeSDKError naming it
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()
    if worker.rknn is not None:
        worker.rknn.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
