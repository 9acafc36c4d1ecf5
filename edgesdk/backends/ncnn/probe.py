"""The ncnn backend's probe for compat: run pnnx on the model and read what it could not lower."""
from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

from edgesdk.backends.ncnn.convert import find_pnnx, write_work_model
from edgesdk.backends.ncnn.param import read_param
from edgesdk.backends.probe import Probe, engine_label, key_line, report_names
from edgesdk.build.compat_tables import NCNN_LAYERS, PNNX_TO_ONNX, PNNX_TYPES
from edgesdk.errors import ConversionError, EdgeSDKError, ModelError

PROBE_TIMEOUT_S = 60


def probe(model, path: Path, work: Path, inputs: list, ops: set) -> Probe | str:
    """Run the pnnx converter (it writes ncnn's .param) and read what it could not lower."""
    try:
        pnnx = find_pnnx()
    except EdgeSDKError:
        return "not probed: pnnx not installed (pip install --no-deps pnnx)"
    specs = []
    for name, dims, dtype in inputs:
        # A dynamic batch becomes 1, as the ncnn converter does; other dynamic dims need a shape.
        dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(dims)]
        if not all(isinstance(d, int) for d in dims):
            return f"not probed: pnnx needs a fixed shape for input '{name}' {dims}; pass shapes to probe it"
        if dtype not in PNNX_TYPES:
            return f"not probed: pnnx takes tensor inputs of plain dtypes; input '{name}' is {dtype}"
        specs.append(f"[{','.join(str(d) for d in dims)}]{PNNX_TYPES[dtype]}")
    work.mkdir()
    try:
        write_work_model(model, work / "model.onnx", "model")
    except ModelError as e:
        return f"not probed: {e}"
    try:
        proc = subprocess.run(
            [str(pnnx), "model.onnx", f"inputshape={','.join(specs)}", "fp16=0"],
            cwd=work, capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"not probed: pnnx did not finish within {PROBE_TIMEOUT_S} s"
    who = engine_label("pnnx")
    log = proc.stdout + proc.stderr
    names = re.findall(r"^todo (\S+)", log, re.M) + re.findall(r"unexpected op_type (\S+)", log)
    names += re.findall(r"No Op registered for (\w+)", log)
    leftovers = []
    param = work / "model.ncnn.param"
    if proc.returncode == 0 and param.is_file():
        known = _ncnn_layer_check()
        model_ops = {op for d, op in ops if not d}
        try:
            kinds = [layer.type for layer in read_param(param.read_text(errors="replace"), str(param))]
        except ConversionError as e:
            return Probe(False, [], f"{engine_label('pnnx')} wrote an unreadable ncnn .param: {e}")
        for kind in kinds:
            if known(kind):
                continue
            onnx_op = kind if kind in model_ops else PNNX_TO_ONNX.get(kind)
            if onnx_op in model_ops:
                names.append(onnx_op)
            else:
                leftovers.append(kind)
        if not names and not leftovers:
            return Probe(True, reason=f"{who} converted it to ncnn layers")
    unsupported = report_names(names, ops)
    reasons = []
    if unsupported:
        reasons.append(f"no ncnn layer for {', '.join(unsupported)}")
    if leftovers:
        reasons.append(f"pnnx left ops ncnn has no layer for: {', '.join(sorted(set(leftovers)))}")
    if proc.returncode != 0:
        rc = proc.returncode
        how = (f"crashed ({signal.Signals(-rc).name})" if rc < 0 and -rc in signal.valid_signals()
               else f"exited with code {rc}")
        errors = [ln for ln in log.splitlines() if re.search(r"fail|error|unsupported", ln, re.I)]
        # the op names, when pnnx printed them, say more than its last words
        reasons.append(f"pnnx {how}" + (f": {key_line(errors[-1])}" if errors and not unsupported else ""))
    elif not param.is_file():
        reasons.append("pnnx wrote no ncnn .param")
    return Probe(False, unsupported, f"{who} failed: {'; '.join(reasons)}")


def _ncnn_layer_check():
    """layer type -> bool: the installed ncnn's registry, else ncnn's layer list above."""
    try:
        import ncnn
    except ImportError:
        return lambda kind: kind in NCNN_LAYERS
    return lambda kind: ncnn.layer_to_index(kind) >= 0
