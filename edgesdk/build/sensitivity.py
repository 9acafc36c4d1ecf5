"""Which layers int8 hurts most: each quantizable node quantized alone (onnxruntime's QDQ simulator),
scored by the output's 1 - cosine against float. The accuracy budget keeps the worst in float."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgesdk.backends.base import ConvertOptions
from edgesdk.errors import EdgeSDKError

SENSITIVITY_CALIBRATION = 32  # feeds for the simulator's ranges: ranking needs no more
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

def layer_sensitivity(model: Path, calibration: list[dict], samples: list[dict],
                      exclude: list[str] = (), only: set[str] | None = None) -> list[tuple[str, float]]:
    """(ONNX node name, mean output 1 - cosine when only that node is quantized), worst first.
    Nodes in `exclude` are not scored, nor, when `only` is given, nodes outside it (those the engine
    does not quantize). See the module docstring for why this measure."""
    import onnx

    from edgesdk.backends.base import first_line as _first_line
    from edgesdk.backends.onnxruntime.convert import at_qdq_opset, quantize_qdq
    from edgesdk.build.model import load_model

    if not samples:
        raise EdgeSDKError("layer sensitivity needs at least one sample")
    float_model = at_qdq_opset(load_model(model))  # the opset quantize_qdq writes the QDQ model at
    with tempfile.TemporaryDirectory(prefix="edgesdk-sens-") as work:
        qdq_path = Path(work) / "qdq.onnx"
        quantize_qdq(model, qdq_path, ConvertOptions(precision="int8", calibration=calibration[:SENSITIVITY_CALIBRATION],
                                                    exclude=list(exclude), calib_method="minmax"))
        qdq = onnx.load(str(qdq_path))
    producer = {o: n for n in qdq.graph.node for o in n.output}
    inits = {i.name: i for i in qdq.graph.initializer}
    float_index = {n.name: k for k, n in enumerate(float_model.graph.node)}
    float_tensors = ({i.name for i in float_model.graph.input} | {i.name for i in float_model.graph.initializer}
                     | {o for n in float_model.graph.node for o in n.output})
    outputs = [o.name for o in float_model.graph.output]
    refs = _run(float_model, samples, outputs)

    scores = []
    for node in qdq.graph.node:
        if (node.op_type in QDQ_OPS or node.name not in float_index or node.name in exclude
                or (only is not None and node.name not in only)):
            continue
        sim = onnx.ModelProto()
        sim.CopyFrom(float_model)
        target = sim.graph.node[float_index[node.name]]
        added = 0
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or k >= len(target.input):
                continue
            q = producer.get(dq.input[0])
            chain = [q, dq] if q is not None and q.op_type == "QuantizeLinear" else [dq]
            if chain[0].input[0] not in float_tensors and chain[0].input[0] not in inits:
                continue
            suffix = f"__sens{k}"
            for c in chain:
                copy = onnx.NodeProto()
                copy.CopyFrom(c)
                copy.name = c.name + suffix
                copy.output[0] = c.output[0] + suffix
                if c is dq and len(chain) == 2:
                    copy.input[0] = q.output[0] + suffix
                sim.graph.initializer.extend(inits[i] for i in copy.input if i in inits and i not in float_tensors)
                sim.graph.node.append(copy)
            target.input[k] = dq.output[0] + suffix
            added += 1
        if not added:
            continue
        _dedupe_initializers(sim)
        sim = _toposort(sim)
        try:
            gots = _run(sim, samples, outputs)
        except Exception as e:
            raise EdgeSDKError(f"sensitivity of node {node.name!r}: {_first_line(e)}") from e
        errs = [1.0 - _cos(r[o], g[o]) for r, g in zip(refs, gots) for o in outputs]
        scores.append((node.name, float(np.mean(errs))))
    return sorted(scores, key=lambda s: -s[1])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    from edgesdk.device.compare import cosine

    return cosine(a, b)


def _dedupe_initializers(model) -> None:
    seen, keep = set(), []
    for i in model.graph.initializer:
        if i.name not in seen:
            seen.add(i.name)
            keep.append(i)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _toposort(model):
    """Appended nodes go after the node that consumes them: put every node after its producers."""
    produced = {o: k for k, n in enumerate(model.graph.node) for o in n.output}
    nodes = list(model.graph.node)
    order, done, state = [], set(), {}

    def visit(k):
        if k in done:
            return
        stack = [(k, False)]
        while stack:
            i, expanded = stack.pop()
            if i in done:
                continue
            if expanded:
                done.add(i)
                order.append(nodes[i])
                continue
            stack.append((i, True))
            for t in nodes[i].input:
                j = produced.get(t)
                if j is not None and j not in done and state.get(j) != i:
                    state[j] = i
                    stack.append((j, False))

    for k in range(len(nodes)):
        visit(k)
    del model.graph.node[:]
    model.graph.node.extend(order)
    return model


def _run(model, feeds: list[dict], outputs: list[str]) -> list[dict]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # all optimisations on: 7x faster than unfused fake quantization
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [dict(zip(outputs, sess.run(outputs, f))) for f in feeds]
