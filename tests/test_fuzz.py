"""Property-based fuzzing of every parser that takes user or bundle input: only edgesdk errors may come
out — never another exception, a crash or a hang. CI runs a bounded number of examples; set
EDGESDK_FUZZ_EXAMPLES (e.g. 20000) for a long run by hand."""
import json
import os
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesdk.errors import EdgeSDKError

EXAMPLES = int(os.environ.get("EDGESDK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("EDGESDK_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30)


@pytest.fixture(scope="module")
def onnx_bytes(linear_relu_onnx):
    return linear_relu_onnx.read_bytes()


@FUZZ
@given(data=st.data())
def test_onnx_loader_mutations(tmp_path_factory, onnx_bytes, data):
    from edgesdk.build.inspect import inspect
    from edgesdk.build.model import load_model

    b = bytearray(onnx_bytes)
    how = data.draw(st.sampled_from(["flip", "truncate", "splice", "random"]))
    if how == "flip":
        for i in data.draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=8)):
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    elif how == "splice":
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(max_size=64))
    else:
        b = bytearray(data.draw(st.binary(max_size=512)))
    p = tmp_path_factory.mktemp("f") / "m.onnx"
    p.write_bytes(bytes(b))
    try:
        load_model(p)
        inspect(p, probe=False)  # a mutation that still checks must still be reportable
    except EdgeSDKError:
        pass


@FUZZ
@given(doc=json_values)
def test_manifest_reader(tmp_path_factory, doc):
    from edgesdk.device.bundle import MANIFEST, read_manifest

    d = tmp_path_factory.mktemp("b")
    (d / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(EdgeSDKError):
        read_manifest(d)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["schema", "target", "backend", "precision", "inputs", "outputs",
                                            "preprocess", "postprocess", "files", "versions", "validation",
                                            "benchmark", "golden", "x"]), json_values, min_size=10))
def test_manifest_reader_near_valid(tmp_path_factory, doc):
    from edgesdk.device.bundle import MANIFEST, read_manifest

    doc["schema"] = 1
    d = tmp_path_factory.mktemp("b")
    (d / MANIFEST).write_text(json.dumps(doc))
    try:
        read_manifest(d)
    except EdgeSDKError:
        pass


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["size", "resize", "pad", "color", "mean", "std", "layout", "dtype",
                                            "interp", "scale"]), json_values, max_size=8))
def test_preprocess_spec_from_dict(doc):
    from edgesdk.device.preprocess import PreprocessSpec

    try:
        PreprocessSpec.from_dict(doc)
    except EdgeSDKError:
        pass


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["schema", "name", "engine", "precision", "arch", "threads", "streams",
                                            "inputs", "preprocess", "postprocess", "validate", "quantize",
                                            "engine_options", "bogus"]), json_values, max_size=12))
def test_profile_parser(doc):
    from edgesdk.build.targets import parse_profile

    try:
        parse_profile(doc, "fuzz.toml")
    except EdgeSDKError:
        pass


param_tokens = st.one_of(st.integers(-3, 6).map(str), st.sampled_from(["Convolution", "Split", "Input", "in0", "0=3",
                                                                       "1=-23310", "x"]),
                         st.text(alphabet=string.ascii_letters + string.digits + "=-.,_", min_size=1, max_size=8))
param_lines = st.lists(st.lists(param_tokens, max_size=10).map(" ".join), max_size=12)


@FUZZ
@given(lines=param_lines)
def test_ncnn_param_parser(lines):
    from edgesdk.backends.ncnn.session import param_layers

    try:
        param_layers("\n".join(["7767517", "3 3", *lines]))
    except EdgeSDKError:
        pass


@FUZZ
@given(h=st.integers(1, 64), w=st.integers(1, 64), ow=st.integers(1, 48), oh=st.integers(1, 48),
       resize=st.sampled_from(["letterbox", "stretch"]), interp=st.sampled_from(["bilinear", "nearest"]),
       color=st.sampled_from(["rgb", "bgr"]), layout=st.sampled_from(["nchw", "nhwc"]),
       dtype=st.sampled_from(["float32", "float16", "uint8"]), roi=st.booleans(), seed=st.integers(0, 2**16))
def test_native_preprocess_matches_reference(h, w, ow, oh, resize, interp, color, layout, dtype, roi, seed):
    from edgesdk.device.preprocess import PreprocessSpec, preprocess, preprocess_reference

    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (h + 3, w + 5, 3), dtype=np.uint8)
    frame = big[1:h + 1, 2:w + 2] if roi else np.ascontiguousarray(big[:h, :w])
    kw = {} if dtype == "uint8" else {"mean": (10.0, 20.0, 30.0), "std": (50.0, 60.0, 70.0)}
    spec = PreprocessSpec(size=(ow, oh), resize=resize, interp=interp, color=color, layout=layout, dtype=dtype, **kw)
    got = preprocess(frame, spec).astype(np.float32)
    want = preprocess_reference(frame, spec).astype(np.float32)
    tol = {"float32": 1e-4, "float16": 2e-2, "uint8": 1.0}[dtype]
    assert np.abs(got - want).max() <= tol
