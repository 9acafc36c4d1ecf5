"""The Triton backend: model repositories for EfficientNet-Lite0 and PP-OCR rec, config.pbtxt read back.

config.pbtxt is read back twice: by the small text-format parser below (always), and by protobuf
against Triton's own ModelConfig schema when the tritonclient package is installed.
"""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgesdk.backends import registry
from edgesdk.backends.base import Artifact, ConvertOptions, ShapeRange, TensorInfo
from edgesdk.backends.triton.convert import TRITON_DTYPES, model_config, to_pbtxt
from edgesdk.backends.triton import TritonBackend
from edgesdk.errors import BackendUnavailable, ConversionError, ModelError

# ---------------------------------------------------------------------------- a tiny text-format reader

_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_.]*)|(-?\d+(?:\.\d+)?)|([{}\[\]:,]))')


def _unquote(s: str) -> str:
    return re.sub(r'\\([0-7]{3}|.)', lambda m: chr(int(m.group(1), 8)) if len(m.group(1)) == 3 else
                  {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), s[1:-1])


def _tokens(text: str) -> list:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot tokenize at {text[pos:pos + 20]!r}"
        string, ident, number, punct = m.groups()
        if string is not None:
            out.append(("str", _unquote(string)))
        elif ident is not None:
            out.append(("id", ident))
        elif number is not None:
            out.append(("num", float(number) if "." in number else int(number)))
        else:
            out.append(("p", punct))
        pos = m.end()
    return out


def parse_pbtxt(text: str) -> dict:
    """field -> list of values (scalars, enum names as str, or nested dicts) for the subset we write."""
    toks = _tokens(text)

    def value(i):
        kind, v = toks[i]
        assert kind in ("str", "id", "num"), f"expected a value, got {v!r}"
        return v, i + 1

    def message(i, end):
        msg = {}
        while i < len(toks) and toks[i] != ("p", end):
            kind, key = toks[i]
            assert kind == "id", f"expected a field name, got {key!r}"
            i += 1
            values = []
            if toks[i] == ("p", ":"):
                i += 1
                if toks[i] == ("p", "["):
                    i += 1
                    while toks[i] != ("p", "]"):
                        v, i = value(i)
                        values.append(v)
                        if toks[i] == ("p", ","):
                            i += 1
                    i += 1
                else:
                    v, i = value(i)
                    values.append(v)
            elif toks[i] == ("p", "{"):
                sub, i = message(i + 1, "}")
                values.append(sub)
                i += 1
            elif toks[i] == ("p", "["):
                i += 1
                while toks[i] != ("p", "]"):
                    assert toks[i] == ("p", "{")
                    sub, i = message(i + 1, "}")
                    values.append(sub)
                    i += 1
                    if toks[i] == ("p", ","):
                        i += 1
                i += 1
            else:
                raise AssertionError(f"unexpected {toks[i]!r} after {key}")
            msg.setdefault(key, []).extend(values)
        return msg, i

    msg, i = message(0, None)
    assert i == len(toks)
    return msg


def real_schema():
    """Triton's ModelConfig message from tritonclient (loaded by path: its package __init__ needs grpc)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient is not installed (pip install --no-deps tritonclient)")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelConfig


def onnx_dims(t: TensorInfo, batched: bool) -> list[int]:
    dims = [d if isinstance(d, int) else -1 for d in t.shape]
    return dims[1:] if batched else dims


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def effnet_repo(effnet_onnx, tmp_path_factory):
    return TritonBackend().convert(effnet_onnx, tmp_path_factory.mktemp("triton") / "repo",
                                   ConvertOptions(engine={"model_name": "effnet"}))


@pytest.fixture(scope="module")
def rec_repo(ppocr_rec_onnx, tmp_path_factory):
    return TritonBackend().convert(ppocr_rec_onnx, tmp_path_factory.mktemp("triton") / "repo",
                                   ConvertOptions(engine={"model_name": "ppocr_rec", "instance_count": 2}))


@pytest.fixture(scope="module")
def text_lines(text_image):
    """Two real text crops of skimage's page() at the recogniser's height 48, width 320, NCHW in [-1, 1]."""
    import cv2

    page = cv2.imread(str(text_image))
    crops = [page[20:60, 10:300], page[100:140, 40:380]]
    x = np.stack([cv2.resize(c, (320, 48)) for c in crops]).astype(np.float32)
    return np.ascontiguousarray(((x / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------- EfficientNet-Lite0

def test_registry_gives_this_backend():
    assert isinstance(registry.get("triton"), TritonBackend)


def test_effnet_repository_layout(effnet_repo):
    root = effnet_repo.root
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "README.txt", "artifact.json", "effnet", "effnet/1", "effnet/1/model.onnx", "effnet/config.pbtxt"]
    assert effnet_repo.files == ["effnet/config.pbtxt", "effnet/1/model.onnx", "README.txt"]
    assert Artifact.load(root).to_dict() == effnet_repo.to_dict()
    assert f"tritonserver --model-repository={root.resolve()}" in (root / "README.txt").read_text()


def test_effnet_config(effnet_repo):
    c = parse_pbtxt(effnet_repo.path("effnet/config.pbtxt").read_text())
    assert c["name"] == ["effnet"] and c["platform"] == ["onnxruntime_onnx"]
    assert c["max_batch_size"] == [0]  # the exported batch dim is fixed at 1: full dims, no batcher
    assert c["input"] == [{"name": ["images"], "data_type": ["TYPE_FP32"], "dims": [1, 3, 224, 224]}]
    assert c["output"] == [{"name": ["logits"], "data_type": ["TYPE_FP32"], "dims": [1, 1000]}]
    assert "dynamic_batching" not in c
    assert c["instance_group"] == [{"count": [1], "kind": ["KIND_CPU"]}]


def test_effnet_model_runs_identically(effnet_onnx, effnet_repo, eval_images, effnet_preprocess):
    import onnxruntime as ort

    from tools.models import to_input

    src = ort.InferenceSession(str(effnet_onnx), providers=["CPUExecutionProvider"])
    served = ort.InferenceSession(str(effnet_repo.path("effnet/1/model.onnx")), providers=["CPUExecutionProvider"])
    tops = set()
    for path in eval_images[:4]:
        feeds = {"images": to_input(path, effnet_preprocess)}
        want, got = src.run(None, feeds)[0], served.run(None, feeds)[0]
        np.testing.assert_array_equal(got, want)
        tops.add(int(want.argmax()))
    assert len(tops) > 1  # real photos, real classes


# ---------------------------------------------------------------------------- PP-OCR rec: dynamic batch and width

def test_rec_config(ppocr_rec_onnx, rec_repo):
    from edgesdk.backends.tensorrt.convert import onnx_io
    from edgesdk.build.model import load_model

    c = parse_pbtxt(rec_repo.path("ppocr_rec/config.pbtxt").read_text())
    assert c["platform"] == ["onnxruntime_onnx"] and c["max_batch_size"] == [8]
    assert c["input"] == [{"name": ["x"], "data_type": ["TYPE_FP32"], "dims": [3, 48, -1]}]
    assert c["output"] == [{"name": ["softmax_11.tmp_0"], "data_type": ["TYPE_FP32"], "dims": [-1, 6625]}]
    assert c["dynamic_batching"] == [{"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": [100]}]
    assert c["instance_group"] == [{"count": [2], "kind": ["KIND_CPU"]}]
    # Against the ONNX model itself: same names, dtypes, and dims without the batch dim.
    inputs, outputs = onnx_io(load_model(ppocr_rec_onnx))
    for entries, infos in ((c["input"], inputs), (c["output"], outputs)):
        assert [e["name"][0] for e in entries] == [t.name for t in infos]
        assert [e["dims"] for e in entries] == [onnx_dims(t, batched=True) for t in infos]
        assert [e["data_type"][0] for e in entries] == [TRITON_DTYPES[t.dtype] for t in infos]


def test_rec_model_runs_identically(ppocr_rec_onnx, rec_repo, text_lines):
    import onnxruntime as ort

    src = ort.InferenceSession(str(ppocr_rec_onnx), providers=["CPUExecutionProvider"])
    served = ort.InferenceSession(str(rec_repo.path("ppocr_rec/1/model.onnx")), providers=["CPUExecutionProvider"])
    for x in (text_lines, text_lines[:1, :, :, :160]):  # a batch of 2, and another width
        want, got = src.run(None, {"x": x})[0], served.run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want)
        assert got.shape == (x.shape[0], x.shape[3] // 8, 6625)
    assert want.max() > 0.5  # the recogniser is confident about real text, not flat


def test_configs_parse_with_tritons_schema(effnet_repo, rec_repo):
    from google.protobuf import text_format

    ModelConfig = real_schema()
    for repo, name in ((effnet_repo, "effnet"), (rec_repo, "ppocr_rec")):
        text = repo.path(f"{name}/config.pbtxt").read_text()
        msg = text_format.Parse(text, ModelConfig())  # unknown fields or bad enum values raise
        mine = parse_pbtxt(text)
        assert msg.name == mine["name"][0] and msg.max_batch_size == mine["max_batch_size"][0]
        assert [list(i.dims) for i in msg.input] == [i["dims"] for i in mine["input"]]
        assert [ModelConfig.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"]
                .enum_type.values_by_number[i.data_type].name for i in msg.input] == \
            [i["data_type"][0] for i in mine["input"]]


def test_all_dtypes_are_tritons():
    ModelConfig = real_schema()
    enum = ModelConfig.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type
    assert set(TRITON_DTYPES.values()) <= set(enum.values_by_name)


# ---------------------------------------------------------------------------- other Triton backends

def test_openvino_repository(ppocr_rec_onnx, tmp_path, text_lines):
    import onnxruntime as ort
    import openvino as ov

    a = TritonBackend().convert(ppocr_rec_onnx, tmp_path / "repo",
                                ConvertOptions(engine={"model_name": "rec", "triton_backend": "openvino"}))
    assert a.files == ["rec/config.pbtxt", "rec/1/model.xml", "rec/1/model.bin", "README.txt"]
    c = parse_pbtxt(a.path("rec/config.pbtxt").read_text())
    assert c["backend"] == ["openvino"] and "platform" not in c and c["max_batch_size"] == [8]
    assert c["instance_group"] == [{"count": [1], "kind": ["KIND_CPU"]}]
    # The IR Triton's OpenVINO backend will load has the tensor names the config gives.
    model = ov.Core().read_model(str(a.path("rec/1/model.xml")))
    assert c["input"][0]["name"][0] in model.inputs[0].get_names()
    assert c["output"][0]["name"][0] in model.outputs[0].get_names()
    # f32 forced: on a CPU with AMX/AVX512_BF16 OpenVINO 2026.4 defaults to bf16 (max-abs 0.065 on these
    # softmax outputs, measured), which Triton's OpenVINO backend cannot turn off.
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({c["input"][0]["name"][0]: text_lines})[0]
    want = ort.InferenceSession(str(ppocr_rec_onnx), providers=["CPUExecutionProvider"]).run(None, {"x": text_lines})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert "bf16" in a.path("README.txt").read_text()  # the README warns about Triton's default


def test_tensorrt_repository(ppocr_rec_onnx, tmp_path):
    width = ShapeRange((1, 3, 48, 32), (4, 3, 48, 320), (8, 3, 48, 1280))
    a = TritonBackend().convert(ppocr_rec_onnx, tmp_path / "repo", ConvertOptions(
        precision="fp16", ranges={"x": width}, engine={"model_name": "rec", "triton_backend": "tensorrt"}))
    assert a.files == ["rec/config.pbtxt", "rec/1/model.onnx", "rec/1/build.json", "rec/1/trtexec.sh", "README.txt"]
    c = parse_pbtxt(a.path("rec/config.pbtxt").read_text())
    assert c["platform"] == ["tensorrt_plan"] and c["max_batch_size"] == [8]
    assert c["instance_group"] == [{"count": [1], "kind": ["KIND_GPU"]}]
    build = json.loads(a.path("rec/1/build.json").read_text())
    assert build["precision"] == "fp16" and build["plan"] == "model.plan"  # Triton's default file name
    assert "--saveEngine=model.plan" in a.path("rec/1/trtexec.sh").read_text()
    readme = a.path("README.txt").read_text()
    assert "sh rec/1/trtexec.sh" in readme and "NOT included" in readme


def test_tensorrt_repository_int8_keeps_the_calibration(effnet_onnx, calib_images, effnet_preprocess, tmp_path):
    """int8 for Triton's TensorRT backend: the calibration feeds reach the TensorRT converter, whose Q/DQ
    model (the graph TensorRT's explicit quantization takes) is what trtexec builds in the repository."""
    import onnx

    from edgesdk.backends.tensorrt.convert import has_qdq, qdq_problems
    from edgesdk.build.calibration import calibration_feeds
    from edgesdk.device.preprocess import PreprocessSpec

    feeds = calibration_feeds(calib_images[:8], [TensorInfo("images", (1, 3, 224, 224), "float32")],
                              PreprocessSpec(**effnet_preprocess))
    a = TritonBackend().convert(effnet_onnx, tmp_path / "repo", ConvertOptions(
        precision="int8", calibration=feeds, calib_method="minmax",
        engine={"model_name": "effnet", "triton_backend": "tensorrt", "max_batch_size": 0}))
    m = onnx.load(str(a.path("effnet/1/model.onnx")))
    assert has_qdq(m) and qdq_problems(m) == []
    assert a.meta["engine_meta"]["calib_method"] == "minmax"
    assert "--int8" in a.path("effnet/1/trtexec.sh").read_text()


def test_tensorrt_batch_profile_filled_and_checked(linear_relu_onnx, ppocr_rec_onnx, tmp_path):
    import onnx

    # Gemm takes any batch: with the batch dim made dynamic, the profile 1..max_batch_size is filled in.
    m = onnx.load(str(linear_relu_onnx))
    for v in (m.graph.input[0], m.graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    dyn = tmp_path / "linear_n.onnx"
    onnx.save(m, str(dyn))
    a = TritonBackend().convert(dyn, tmp_path / "repo", ConvertOptions(
        engine={"triton_backend": "tensorrt", "max_batch_size": 16}))
    build = json.loads(a.path("linear_n/1/build.json").read_text())
    assert build["profiles"] == {"input": {"min": [1, 13], "opt": [8, 13], "max": [16, 13]}}
    c = parse_pbtxt(a.path("linear_n/config.pbtxt").read_text())
    assert c["input"][0]["dims"] == [13] and c["output"][0]["dims"] == [1]
    # A caller's range that cannot hold the batches Triton sends is refused.
    with pytest.raises(ConversionError, match=r"Triton sends batches of 1..8 but the range of input 'x' allows "
                                              r"batch 1..4"):
        TritonBackend().convert(ppocr_rec_onnx, tmp_path / "rec", ConvertOptions(
            ranges={"x": ShapeRange((1, 3, 48, 32), (2, 3, 48, 320), (4, 3, 48, 1280))},
            engine={"triton_backend": "tensorrt"}))


def test_fixed_shape_turns_batching_off(ppocr_rec_onnx, tmp_path):
    a = TritonBackend().convert(ppocr_rec_onnx, tmp_path / "repo", ConvertOptions(shapes={"x": (1, 3, 48, 320)}))
    c = parse_pbtxt(a.path(f"{a.meta['model_name']}/config.pbtxt").read_text())
    assert c["max_batch_size"] == [0] and "dynamic_batching" not in c
    assert c["input"][0]["dims"] == [1, 3, 48, 320]
    assert c["output"][0]["dims"] == [1, 40, 6625]


# ---------------------------------------------------------------------------- writer, errors, no session

def test_writer_escapes_and_rank1_batch():
    inputs = [TensorInfo('a"b\\c\nd', ("N", 4), "float32")]
    outputs = [TensorInfo("label", ("N",), "int64")]
    text = to_pbtxt(model_config("m", "onnxruntime", inputs, outputs, 4, [2, 4]))
    c = parse_pbtxt(text)
    assert c["input"][0]["name"] == ['a"b\\c\nd']
    assert c["output"] == [{"name": ["label"], "data_type": ["TYPE_INT64"], "dims": [1], "reshape": [{"shape": []}]}]
    if importlib.util.find_spec("tritonclient"):
        from google.protobuf import text_format

        msg = text_format.Parse(text, real_schema()())
        assert msg.input[0].name == 'a"b\\c\nd' and list(msg.output[0].reshape.shape) == []


@pytest.mark.parametrize("engine, options, message", [
    ({"triton_backend": "tensorflow"}, {}, r"triton_backend must be one of onnxruntime, openvino, tensorrt"),
    ({"max_batch_size": -1}, {}, r"max_batch_size must be an integer >= 0, got -1"),
    ({"instance_kind": "gpu", "triton_backend": "openvino"}, {}, r"openvino backend runs instances of kind cpu"),
    ({"model_name": "../x"}, {}, r"model_name '../x' must be a directory name"),
    ({"workspace_mb": 64}, {}, r"unknown engine option\(s\) \['workspace_mb'\] for Triton with onnxruntime"),
    ({"instance_count": 0}, {}, r"instance_count must be an integer >= 1"),
    ({}, {"precision": "int8"}, r"int8 needs calibration feeds"),
])
def test_option_errors(effnet_onnx, tmp_path, engine, options, message):
    with pytest.raises(ConversionError, match=message):
        TritonBackend().convert(effnet_onnx, tmp_path / "repo", ConvertOptions(engine=engine, **options))
    assert not (tmp_path / "repo").exists()


def test_batch_cap_on_a_fixed_batch_model(effnet_onnx, tmp_path):
    # A target profile's max_batch_size caps batching; a model exported with batch 1 is served unbatched.
    a = TritonBackend().convert(effnet_onnx, tmp_path / "repo", ConvertOptions(
        engine={"model_name": "effnet", "max_batch_size": 8, "instance_count": 1}))
    c = parse_pbtxt(a.path("effnet/config.pbtxt").read_text())
    assert c["max_batch_size"] == [0] and c["input"][0]["dims"] == [1, 3, 224, 224]
    assert a.meta["batching_note"] == "not batched: 'images' has a fixed first dim [1, 3, 224, 224]"
    assert "max_batch_size 0 (not batched: 'images' has a fixed first dim" in a.path("README.txt").read_text()


def test_rec_preferred_batch_sizes(ppocr_rec_onnx, tmp_path):
    with pytest.raises(ConversionError, match=r"preferred_batch_size must be a list of integers in 1..4"):
        TritonBackend().convert(ppocr_rec_onnx, tmp_path / "a", ConvertOptions(
            engine={"max_batch_size": 4, "preferred_batch_size": [2, 8]}))
    a = TritonBackend().convert(ppocr_rec_onnx, tmp_path / "b", ConvertOptions(
        engine={"max_batch_size": 4, "preferred_batch_size": [1, 4], "max_queue_delay_us": 500}))
    c = parse_pbtxt(a.path(f"{a.meta['model_name']}/config.pbtxt").read_text())
    assert c["dynamic_batching"] == [{"preferred_batch_size": [1, 4], "max_queue_delay_microseconds": [500]}]


def test_unknown_input_name_from_engine_backend(ppocr_rec_onnx, tmp_path):
    with pytest.raises(ModelError, match=r"no input named 'image'"):
        TritonBackend().convert(ppocr_rec_onnx, tmp_path / "repo", ConvertOptions(shapes={"image": (1, 3, 48, 320)}))


def test_no_session_says_how_to_serve(effnet_repo):
    backend = TritonBackend()
    assert "tritonserver --model-repository" in backend.available()
    with pytest.raises(BackendUnavailable, match=rf"tritonserver --model-repository={re.escape(str(effnet_repo.root.resolve()))}"):
        backend.open(effnet_repo)


def test_the_pipeline_names_the_model_after_the_users_file(effnet_onnx, tmp_path):
    """convert() hands the engine a temporary optimized copy (reference.onnx): the Triton model is still
    named after the file the user gave, unless the profile names it, and its errors name that file."""
    from edgesdk.build.package import convert

    res = convert(effnet_onnx, "triton", tmp_path / "repo", require_engine=False)  # as `edgesdk convert` does
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", effnet_onnx.stem)
    assert res.artifact.meta["model_name"] == name != "reference"
    assert (tmp_path / "repo" / name / "config.pbtxt").is_file()
    with pytest.raises(ConversionError, match=re.escape(f"{effnet_onnx}: triton_backend must be one of")):
        convert(effnet_onnx, "triton", tmp_path / "bad", engine_options={"triton_backend": "nope"}, require_engine=False)
