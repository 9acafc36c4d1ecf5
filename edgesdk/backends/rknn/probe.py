"""compat's live check for the Rockchip NPU: the worker in the rknn-toolkit2 environment loads the model and
builds it without quantization (fp16) for the platform compat judges; nothing is exported and no simulator
starts. rknn is never imported here. Build side.

The toolkit's verdicts, as 2.5.0 words them (read from its log and its exception):
- refused at load: "Unsupport onnx opset 20, need <= 19!"
- refused at build: "The input 0 of NonZero('y') need to be constant!" (a dynamic-shape op), or onnxruntime's
  'In Node, ("y", Foo, "com.example", -1) ...' for an op of a domain it drops
- built, yet "No lowering found for: y, node type = Sign, use CustomOperatorLower instead": the NPU compiler
  left the op as a custom operator, which the board runs only if one is registered for it.
"""
from __future__ import annotations

import re
from pathlib import Path

from edgesdk.backends.probe import Probe, key_line, op_name, report_names

NO_LOWERING = re.compile(r"No lowering found for: .*?, node type = (\w+)")
NOT_CONSTANT = re.compile(r"The input \d+ of (\w+)\('[^']*'\) need to be constant")
ORT_NODE = re.compile(r'In Node, \("[^"]*", (\w+), "([\w.]*)"')
NOISE = ("Traceback", "rknn-toolkit2 version", "Unkown op target", "=====")


def probe(model, path: Path, work: Path, inputs: list, ops: set, platform: str) -> Probe | str:
    from edgesdk.backends.rknn.convert import Worker
    from edgesdk.errors import EdgeSDKError

    shapes = []
    for name, dims, _ in inputs:
        if not all(isinstance(d, int) for d in dims):
            return (f"not probed: the NPU runs fixed input shapes and input '{name}' is {dims}; "
                    f"pass shapes to probe it")
        shapes.append(list(dims))
    try:
        worker = Worker()
    except EdgeSDKError as e:  # the environment is missing: say how to make it
        return f"not probed: {e}"
    try:
        start = worker.log_size()
        reply = worker.request("probe", onnx=str(path), platform=platform, inputs=[i[0] for i in inputs],
                               shapes=shapes)
        log = worker.log_since(start)
    finally:
        worker.close()
    return verdict(reply, log, ops, platform)


def verdict(reply: dict, log: str, ops: set, platform: str) -> Probe:
    """The probe's answer from the worker's reply and the toolkit's log of that request."""
    who = f"rknn-toolkit2 {reply.get('toolkit', '')}".strip()
    error = reply.get("error", "")
    if reply["built"]:
        unlowered = report_names(dict.fromkeys(NO_LOWERING.findall(log)), ops)
        if not unlowered:
            return Probe(True, reason=f"{who} built it for {platform} (fp16)")
        return Probe(False, unlowered, f"{who} built it for {platform}, but its NPU compiler has no lowering for "
                                       f"{', '.join(unlowered)} (left as custom operators, which the board runs "
                                       "only if one is registered: rknn_register_custom_ops)")
    text = f"{log}\n{error}"
    names = NOT_CONSTANT.findall(text) + [op_name(d, o) for o, d in ORT_NODE.findall(text)]
    said = [ln[2:].strip() for ln in log.splitlines() if ln.startswith("E ") and not any(n in ln for n in NOISE)]
    constant = re.search(NOT_CONSTANT.pattern + r"![^\n]*", text)
    reason = constant.group(0).strip() if constant else said[-1] if said else key_line(error)
    return Probe(False, report_names(dict.fromkeys(names), ops), f"{who} refused it for {platform}: {reason}")
