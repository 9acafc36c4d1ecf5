"""The per-backend compatibility report, against the real engines installed here."""
import importlib.util
import json
import time

import numpy as np
import onnx
import onnx.inliner
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.build.compat import BACKENDS, BackendCompat, _limit_notes, check_compat, format_compat
from edgesdk.build.compat_tables import (IR_MAX, NCNN_SUPPORTED, NCNN_UNSUPPORTED, ONNXRUNTIME_SUPPORTED, OPENVINO_SUPPORTED,
                                         OPENVINO_UNSUPPORTED, OPSET_RANGE, RKNN_SUPPORTED, RKNN_UNSUPPORTED,
                                         TENSORRT_SUPPORTED, TENSORRT_UNSUPPORTED)
from edgesdk.errors import ModelError

ML_OPS = ["ai.onnx.ml:LinearClassifier", "ai.onnx.ml:Normalizer", "ai.onnx.ml:ZipMap"]
# IR 10 is what today's exporters write; onnx 1.23's default (IR 14) is refused by ORT 1.31.
IR = 10


def _model(nodes, inputs, outputs, inits=(), opset=17, ir=IR, functions=(), extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    m = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    m.ir_version = ir
    onnx.checker.check_model(m)
    return onnx.shape_inference.infer_shapes(m)


def _tensor(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def conv_net(dims=(1, 3, 32, 32), opset=17, ir=IR):
    """Conv-BN-ReLU-MaxPool-Conv-GlobalAveragePool-Flatten-Gemm-Softmax with real weights."""
    rng = np.random.default_rng(0)
    w = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)
    inits = [
        w("w1", 16, 3, 3, 3), w("b1", 16), w("scale", 16), w("bias", 16), w("mean", 16),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "var"),
        w("w2", 32, 16, 3, 3), w("fc", 10, 32), w("fcb", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "scale", "bias", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    batch = dims[0]
    return _model(nodes, [_tensor("x", list(dims))], [_tensor("y", [batch, 10])], inits, opset=opset, ir=ir)


def single_op(op, dims=(1, 3, 8, 8), out_dims=None, opset=17, **attrs):
    """x -> Relu -> op -> y: the op under test fed by a computed tensor (nothing to constant-fold)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["r"], ["y"], **attrs)]
    out = list(dims if out_dims is None else out_dims)
    return _model(nodes, [_tensor("x", list(dims))], [_tensor("y", out)], opset=opset)


def probed(c: BackendCompat) -> bool:
    return any(n.startswith("probe:") for n in c.notes)


def _engines():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from edgesdk.backends.ncnn.convert import find_pnnx
    from edgesdk.errors import BackendUnavailable

    try:
        find_pnnx()
    except BackendUnavailable as e:
        pytest.skip(str(e))


# ---------------------------------------------------------------------------- the public shape

def test_json_shape_is_the_public_contract(sklearn_onnx):
    report = check_compat(onnx.load(str(sklearn_onnx)), probe=False)
    assert tuple(report) == BACKENDS == ("ncnn", "openvino", "tensorrt", "onnxruntime", "rknn")
    for c in report.values():
        d = json.loads(json.dumps(c.to_dict()))
        assert set(d) == {"supported", "unsupported", "notes"}
        assert isinstance(d["supported"], bool)
        assert all(isinstance(s, str) for s in d["unsupported"] + d["notes"])
        assert BackendCompat(**d) == c


# ---------------------------------------------------------------------------- scikit-learn (ONNX-ML)

def test_sklearn_table_names_the_onnx_ml_ops(sklearn_onnx):
    report = check_compat(onnx.load(str(sklearn_onnx)), model_path=sklearn_onnx, probe=False)
    for b in ("ncnn", "tensorrt"):
        assert report[b].supported is False
        assert report[b].unsupported == ML_OPS
    # OpenVINO's frontend table lists ai.onnx.ml Normalizer, not the other two.
    assert report["openvino"].supported is False
    assert report["openvino"].unsupported == ["ai.onnx.ml:LinearClassifier", "ai.onnx.ml:ZipMap"]
    for b in ("ncnn", "openvino", "tensorrt"):
        assert any("use the onnxruntime backend" in n for n in report[b].notes), report[b].notes
    assert report["onnxruntime"] == BackendCompat(True, [], [])


def test_sklearn_probe_agrees_with_table(sklearn_onnx):
    _engines()
    model = onnx.load(str(sklearn_onnx))
    table = check_compat(model, model_path=sklearn_onnx, probe=False)
    live = check_compat(model, model_path=sklearn_onnx, probe=True)
    for b in ("ncnn", "openvino", "onnxruntime"):
        assert probed(live[b]), (b, live[b].notes)
        assert (live[b].supported, live[b].unsupported) == (table[b].supported, table[b].unsupported), b
    # pnnx names all three ONNX-ML ops itself ("unexpected op_type ...") before it crashes.
    assert any("no ncnn layer for " + ", ".join(ML_OPS) in n for n in live["ncnn"].notes), live["ncnn"].notes
    trt_note = ("not probed: tensorrt not installed" if importlib.util.find_spec("tensorrt") is None
                else "not probed: edgesdk does not probe TensorRT; the table answers")
    assert trt_note in live["tensorrt"].notes


# ---------------------------------------------------------------------------- plain CNN

def test_plain_conv_model_is_supported_everywhere():
    _engines()
    report = check_compat(conv_net(), probe=True)
    for b, c in report.items():
        assert c.supported and c.unsupported == [], (b, c)
        assert not any("dynamic" in n or "unverified" in n for n in c.notes), (b, c.notes)
    for b in ("ncnn", "openvino", "onnxruntime"):
        assert probed(report[b]), report[b].notes


def test_efficientnet_lite0_is_supported_everywhere(effnet_onnx):
    _engines()
    report = check_compat(onnx.load(str(effnet_onnx)), model_path=effnet_onnx, probe=True)
    for b, c in report.items():
        assert c.supported and c.unsupported == [], (b, c)
    for b in ("ncnn", "openvino", "onnxruntime"):
        assert probed(report[b]), report[b].notes


# ---------------------------------------------------------------------------- dynamic dims

def test_dynamic_hw_notes():
    model = conv_net(dims=("N", 3, "H", "W"))
    report = check_compat(model, probe=False)
    trt = [n for n in report["tensorrt"].notes if "input 'x'" in n]
    assert len(trt) == 1
    assert "['N', 'H', 'W']" in trt[0]
    assert "min/opt/max" in trt[0] and "[inputs.x]" in trt[0]
    assert "--shape x=1x3xHxW" in trt[0]
    ncnn = [n for n in report["ncnn"].notes if "input 'x'" in n]
    assert len(ncnn) == 1 and "inputshape" in ncnn[0] and "--shape x=1x3xHxW" in ncnn[0]
    # OpenVINO and ONNX Runtime take dynamic shapes as they are.
    for b in ("openvino", "onnxruntime"):
        assert not any("dynamic" in n for n in report[b].notes)
    assert all(c.supported for c in report.values())


def test_dynamic_hw_probe_needs_a_shape_and_uses_the_given_one():
    _engines()
    model = conv_net(dims=("N", 3, "H", "W"))
    unshaped = check_compat(model, probe=True)
    assert not probed(unshaped["ncnn"])
    assert any(n.startswith("not probed: pnnx needs a fixed shape for input 'x'") for n in unshaped["ncnn"].notes)
    for b in ("openvino", "onnxruntime"):
        assert probed(unshaped[b]) and unshaped[b].supported

    shaped = check_compat(model, shapes={"x": tuple(np.array([1, 3, 64, 48]))}, probe=True)
    assert probed(shaped["ncnn"]) and shaped["ncnn"].supported, shaped["ncnn"].notes
    for c in shaped.values():
        assert not any("dynamic" in n for n in c.notes), c.notes


def test_dynamic_batch_only():
    report = check_compat(conv_net(dims=("batch", 3, 32, 32)), probe=False)
    assert any("dynamic batch dim ['batch']" in n and "batch 1" in n for n in report["ncnn"].notes)
    assert any("--shape x=1x3x32x32" in n for n in report["tensorrt"].notes)


def test_bad_shapes_are_model_errors():
    model = conv_net(dims=("N", 3, "H", "W"))
    with pytest.raises(ModelError, match="no input named 'images'"):
        check_compat(model, shapes={"images": (1, 3, 32, 32)}, probe=False)
    with pytest.raises(ModelError, match="rank 4"):
        check_compat(model, shapes={"x": (3, 32, 32)}, probe=False)
    with pytest.raises(ModelError, match="fixed at"):
        check_compat(model, shapes={"x": (1, 4, 32, 32)}, probe=False)
    with pytest.raises(ModelError, match="positive"):
        check_compat(model, shapes={"x": (1, 3, 0, 32)}, probe=False)


# ---------------------------------------------------------------------------- ops the engines lack

def test_op_missing_in_openvino_frontend():
    # Det: an ONNX op since opset 11; OpenVINO's ONNX frontend table lists it without a supported version.
    _engines()
    model = single_op("Det", dims=(2, 3, 3), out_dims=(2,))
    table = check_compat(model, probe=False)
    live = check_compat(model, probe=True)
    assert table["openvino"].unsupported == ["Det"] and not table["openvino"].supported
    assert live["openvino"].unsupported == ["Det"] and not live["openvino"].supported
    assert any("no conversion rule for Det" in n for n in live["openvino"].notes), live["openvino"].notes
    assert table["tensorrt"].unsupported == ["Det"]  # "N" in TensorRT's operator matrix
    assert live["ncnn"].unsupported == ["Det"] and probed(live["ncnn"])
    assert live["onnxruntime"].supported and probed(live["onnxruntime"])


def test_openvino_probe_names_every_missing_op():
    _engines()
    nodes = [
        helper.make_node("Det", ["a"], ["d"]),
        helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model = _model(nodes, [_tensor("x", [1, 1, 4, 4]), _tensor("a", [2, 2])],
                   [_tensor("y", [1, 1, 4, 4]), _tensor("d", [])])
    report = check_compat(model, probe=True)
    assert report["openvino"].unsupported == ["Det", "MaxUnpool"]
    assert report["ncnn"].unsupported == ["Det", "MaxUnpool"]


def test_ncnn_probe_names_ops_the_table_could_not_judge():
    # Comparisons and Cast are not in pnnx's documented list; pnnx keeps them as torch ops
    # (torch.gt, Tensor.to) that ncnn has no layer for.
    _engines()
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Greater", ["r", "x"], ["b"]),
        helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT),
    ]
    model = _model(nodes, [_tensor("x", [1, 3, 4, 4])], [_tensor("y", [1, 3, 4, 4])])
    table = check_compat(model, probe=False)
    assert table["ncnn"].supported
    assert "not in pnnx/ncnn's documented list; unverified: Cast, Greater" in table["ncnn"].notes
    live = check_compat(model, probe=True)
    assert not live["ncnn"].supported
    assert live["ncnn"].unsupported == ["Cast", "Greater"]
    assert not any("unverified" in n for n in live["ncnn"].notes)
    assert live["openvino"].supported and live["onnxruntime"].supported


def test_probe_overrides_a_wrong_table_entry():
    # Softsign is in NCNN_UNSUPPORTED; made-up support claims would show up here as a mismatch.
    _engines()
    model = single_op("Softsign")
    live = check_compat(model, probe=True)
    assert live["ncnn"].unsupported == ["Softsign"] and probed(live["ncnn"])
    assert live["openvino"].supported and live["tensorrt"].supported


def test_onnxruntime_expands_onnx_functions():
    # HardSwish has no ORT CPU kernel; ONNX defines it as a function, which ORT inlines.
    _engines()
    assert "HardSwish" not in ONNXRUNTIME_SUPPORTED[""]
    model = single_op("HardSwish", opset=22)
    assert check_compat(model, probe=False)["onnxruntime"].supported
    live = check_compat(model, probe=True)
    assert live["onnxruntime"].supported and probed(live["onnxruntime"])


def test_custom_domain_and_local_functions():
    # pnnx, TensorRT and ORT inline a model-local function, so its body's ops are what count;
    # OpenVINO's frontend does not and names the call.
    relu6 = helper.make_function(
        "my.funcs", "Relu6", ["a"], ["b"],
        [helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.array(0, np.float32))),
         helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(6, np.float32))),
         helper.make_node("Clip", ["a", "lo", "hi"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    nodes = [helper.make_node("Relu6", ["x"], ["r"], domain="my.funcs"),
             helper.make_node("Mystery", ["r"], ["y"], domain="vendor.ops")]
    model = _model(nodes, [_tensor("x", [1, 4])], [_tensor("y", [1, 4])], functions=[relu6],
                   extra_opsets=[("my.funcs", 1), ("vendor.ops", 1)])
    report = check_compat(model, probe=False)
    for b in ("ncnn", "tensorrt", "onnxruntime"):
        assert report[b].unsupported == ["vendor.ops:Mystery"], (b, report[b])
    assert report["openvino"].unsupported == ["my.funcs:Relu6", "vendor.ops:Mystery"]
    assert any("inline_local_functions" in n for n in report["openvino"].notes)

    _engines()
    live = check_compat(model, probe=True)
    assert live["onnxruntime"].unsupported == ["vendor.ops:Mystery"] and probed(live["onnxruntime"])
    assert live["openvino"].unsupported == ["my.funcs:Relu6", "vendor.ops:Mystery"] and probed(live["openvino"])
    # The suggested fix works: inlined, OpenVINO only lacks the custom op.
    inlined = check_compat(onnx.inliner.inline_local_functions(model), probe=True)
    assert inlined["openvino"].unsupported == ["vendor.ops:Mystery"] and probed(inlined["openvino"])


def test_ops_inside_subgraphs_count():
    then_g = helper.make_graph([helper.make_node("Det", ["a"], ["t"])], "then", [], [_tensor("t", [])])
    else_g = helper.make_graph([helper.make_node("Identity", ["z"], ["e"])], "else", [], [_tensor("e", [])])
    nodes = [helper.make_node("ReduceSum", ["a"], ["s"], keepdims=0),
             helper.make_node("Cast", ["s"], ["c"], to=TensorProto.BOOL),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = _model(nodes, [_tensor("a", [2, 2]), _tensor("z", [])], [_tensor("y", [])])
    report = check_compat(model, probe=False)
    assert report["openvino"].unsupported == ["Det"]
    assert report["tensorrt"].unsupported == ["Det"]


# ---------------------------------------------------------------------------- opsets and IR versions

def test_opset_too_new():
    # The limits are those of the engines pinned in tools/lock.txt (ONNX Runtime 1.32.0: opset 28,
    # IR 14; pnnx 20261020's bundled ONNX Runtime: opset 26); a refreshed lock re-measures them.
    _engines()
    ort_max = OPSET_RANGE["onnxruntime"][1]
    opset = ort_max + 1
    model = conv_net(opset=opset)
    table = check_compat(model, probe=False)
    assert not table["onnxruntime"].supported
    assert any(f"opset {opset} is newer than ONNX Runtime's max {ort_max}" in n for n in table["onnxruntime"].notes)
    assert not table["tensorrt"].supported
    assert any(f"opset {opset} is newer than TensorRT 10.3's max 20" in n for n in table["tensorrt"].notes)
    live = check_compat(model, probe=True)
    assert not live["onnxruntime"].supported  # ORT itself refuses it
    assert any(f"till opset {ort_max}" in n for n in live["onnxruntime"].notes), live["onnxruntime"].notes
    assert not live["ncnn"].supported  # pnnx's bundled onnxruntime too


def test_tensorrt_opset_floor():
    report = check_compat(conv_net(opset=8), probe=False)
    assert not report["tensorrt"].supported
    assert any("older than TensorRT 10.3's min 9" in n for n in report["tensorrt"].notes)


def test_tensorrt_table_by_release():
    """JetPack 6's TensorRT 10.3 takes opsets up to 20 and fewer ops than 10.15: the table follows the
    release a profile names (or the installed one), so a model 10.15 takes is refused for a Jetson."""
    from edgesdk.build.compat_tables import tensorrt_table
    from edgesdk.build.targets import load_target

    assert tensorrt_table("10.3")[2] == (9, 20) and tensorrt_table("10.15.1")[2] == (9, 24)
    assert tensorrt_table("8.6")[2] == (9, 20)  # older than every table: the oldest answers
    assert "Attention" in tensorrt_table("10.15")[0][""] and "Attention" not in tensorrt_table("10.3")[0][""]
    assert "STFT" in tensorrt_table("10.3")[1] and "STFT" not in tensorrt_table("10.15")[1]
    model = conv_net(opset=21)
    jetson = load_target("jetson-orin-nano").engine_options["tensorrt_version"]
    assert jetson == "10.3"
    old = check_compat(model, probe=False, tensorrt_version=jetson)["tensorrt"]
    assert not old.supported and any("opset 21 is newer than TensorRT 10.3's max 20" in n for n in old.notes)
    assert check_compat(model, probe=False, tensorrt_version="10.15")["tensorrt"].supported


def test_ir_version_too_new_for_onnxruntime():
    # The locked onnx (1.23.2) writes at most IR 14, which the locked ONNX Runtime (1.32.0) reads, so
    # no model the checker accepts is too new: the table's note is checked, and its limit against ORT.
    import onnxruntime as ort

    ir_max = IR_MAX["onnxruntime"]
    notes = _limit_notes("onnxruntime", {"": 17}, ir_max + 1)
    assert any(f"IR version {ir_max + 1} is newer than ONNX Runtime's max {ir_max}" in n for n in notes)
    assert not _limit_notes("onnxruntime", {"": 17}, ir_max)
    model = conv_net(ir=ir_max)
    model.ir_version = ir_max + 1  # past the checker, which refuses it as well
    with pytest.raises(Exception, match=f"max supported IR version: {ir_max}"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------- the tables themselves

# Ops engines still list that ONNX has dropped (experimental in ONNX <= 1.4) or that are ORT's own.
LEGACY = {"ATen", "Affine", "ConstantFill", "Crop", "DynamicSlice", "ImageScaler", "IsFinite",
          "ParametricSoftplus", "Scale", "ScaledTanh", "SimplifiedLayerNormalization"}


@pytest.mark.parametrize("name, supported, unsupported", [
    ("ncnn", NCNN_SUPPORTED[""], NCNN_UNSUPPORTED),
    ("openvino", OPENVINO_SUPPORTED[""], OPENVINO_UNSUPPORTED),
    ("tensorrt", TENSORRT_SUPPORTED[""], TENSORRT_UNSUPPORTED),
    ("onnxruntime", ONNXRUNTIME_SUPPORTED[""], frozenset()),
    ("rknn", RKNN_SUPPORTED[""], RKNN_UNSUPPORTED),
])
def test_tables_name_real_onnx_ops(name, supported, unsupported):
    onnx_ops = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""}
    assert not supported & unsupported
    assert sorted((supported | unsupported) - onnx_ops - LEGACY) == [], name


def test_onnxruntime_table_matches_the_installed_kernels():
    ort = pytest.importorskip("onnxruntime")
    # The table is the locked ORT's (tools/lock.txt); a refreshed lock that moves ORT updates it.
    assert ort.__version__ == "1.32.0", f"the table is ORT 1.32.0's; installed {ort.__version__}: update it"
    from onnxruntime.capi import _pybind_state

    registered: dict[str, set] = {}
    for k in _pybind_state.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            registered.setdefault(k.domain, set()).add(k.op_name)
    registered[""] -= {"MemcpyFromHost", "MemcpyToHost"}  # graph plumbing, not model ops
    for domain, ops in ONNXRUNTIME_SUPPORTED.items():
        assert ops - {"Constant"} == registered[domain], domain


# ---------------------------------------------------------------------------- the human table

def test_format_compat_rows_and_wrapping(sklearn_onnx):
    report = check_compat(onnx.load(str(sklearn_onnx)), probe=False)
    text = format_compat(report, width=80)
    lines = text.splitlines()
    rows = {ln.split()[0]: ln.split()[1] for ln in lines[1:] if not ln.startswith(" ")}
    assert rows == {"ncnn": "NO", "openvino": "NO", "tensorrt": "NO", "onnxruntime": "ok", "rknn": "NO"}
    assert all(len(ln) <= 80 for ln in lines), text
    assert "ai.onnx.ml:LinearClassifier" in text
    # Plain dicts (the JSON form) format the same.
    assert format_compat({k: v.to_dict() for k, v in report.items()}, width=80) == text


# ---------------------------------------------------------------------------- probe cost

@pytest.mark.slow
def test_probe_time_on_efficientnet_lite0(effnet_onnx):
    """Not a timed assertion: prints what the three probes cost on a 4.6 M-parameter CNN."""
    _engines()
    model = onnx.load(str(effnet_onnx))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert 4_000_000 < params < 6_000_000
    check_compat(model, model_path=effnet_onnx, probe=True)  # warm: engine imports
    t0 = time.perf_counter()
    report = check_compat(model, model_path=effnet_onnx, probe=True)
    seconds = time.perf_counter() - t0
    assert all(probed(report[b]) for b in ("ncnn", "openvino", "onnxruntime"))
    print(f"\ncompat probes on EfficientNet-Lite0 ({params / 1e6:.2f} M params): {seconds:.2f} s")
