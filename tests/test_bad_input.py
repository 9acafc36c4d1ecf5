"""Bad input everywhere a user gives it — ONNX files, arrays and frames, target profiles, bundles, CLI
arguments: each gives an edgesdk error of the right type whose message names the thing at fault (file
or tensor, expected vs got), or works and gives the same answer as clean input. Never another
exception, a crash or a wrong answer. One table per input kind; real models, bundles and engines."""
import importlib
import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest

import edgesdk
from edgesdk import cli
from edgesdk.errors import BackendUnavailable, BundleError, EdgeSDKError, ModelError, TargetError
from edgesdk.build.inspect import inspect
from edgesdk.build.model import load_model
from edgesdk.build.package import convert
from edgesdk.device.preprocess import PreprocessSpec, preprocess, preprocess_reference, read_image
from edgesdk.device.runtime import NativeSession

pre = importlib.import_module("edgesdk.device.preprocess")  # the module: edgesdk.preprocess is also the function


def raises(kind, fn, *needles):
    """fn() raises exactly `kind` (an edgesdk error) and its message holds every needle."""
    with pytest.raises(EdgeSDKError) as info:
        fn()
    assert type(info.value) is kind, f"{type(info.value).__name__}: {info.value}"
    for n in needles:
        assert str(n) in str(info.value), f"{n!r} not in: {info.value}"
    return info.value


# ---------------------------------------------------------------------------- ONNX files

def huge_model(path, dims):
    """A real Conv + Relu graph whose input is declared with `dims` (nothing of that size exists)."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], np.random.default_rng(0).random(216, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["y"], ["z"], name="relu")], "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


ONNX_FILES = {  # name -> (make the file from the real model's bytes, words the error must hold)
    "empty": (lambda p, good: p.write_bytes(b""), ["empty file"]),
    "truncated": (lambda p, good: p.write_bytes(good[:50_000]), ["not a readable ONNX model"]),
    "random bytes": (lambda p, good: p.write_bytes(np.random.default_rng(1).bytes(4096)), ["ONNX"]),
    "an image named .onnx": (lambda p, good: shutil.copy(pre_image(), p), ["ONNX"]),
    "directory named .onnx": (lambda p, good: p.mkdir(), ["is a directory"]),
    "missing": (lambda p, good: None, ["no such file"]),
}


def pre_image():
    from tools import models

    return models.calibration_images()[0]


@pytest.mark.parametrize("case", ONNX_FILES)
def test_bad_onnx_files(tmp_path, effnet_onnx, case):
    make, words = ONNX_FILES[case]
    p = tmp_path / "model.onnx"
    make(p, effnet_onnx.read_bytes())
    raises(ModelError, lambda: load_model(p), p, *words)
    raises(ModelError, lambda: inspect(p, probe=False), p, *words)
    raises(ModelError, lambda: convert(p, "onnxruntime", tmp_path / "out"), p, *words)
    raises(ModelError, lambda: edgesdk.package(p, "x86-onnxruntime", tmp_path / "bundle"), p, *words)
    assert not (tmp_path / "out").exists() and not (tmp_path / "bundle").exists()


def test_huge_input_dims_inspected_without_allocating_and_refused_by_builds(tmp_path):
    p = huge_model(tmp_path / "huge.onnx", [1, 3, 100000, 100000])  # 112 GiB as float32
    report = inspect(p)  # no engine is asked about it: they would try to allocate the input
    assert report.inputs[0]["shape"] == [1, 3, 100000, 100000]
    assert report.flops == 8 * 27 * 100000 * 100000  # counted from the shapes, not by running anything
    for backend in ("onnxruntime", "openvino", "ncnn"):
        assert report.compat[backend]["notes"][-1].startswith("not probed: input 'x' of shape [1, 3, 100000, 100000]")
    for backend in ("onnxruntime", "openvino", "ncnn"):
        raises(ModelError, lambda: convert(p, backend, tmp_path / backend), p, "'x'", "[1, 3, 100000, 100000]",
               "111.8 GiB", "2 GiB")
    raises(ModelError, lambda: edgesdk.package(p, "x86-onnxruntime", tmp_path / "bundle"), "'x'", "111.8 GiB")
    # a dynamic model given a huge shape for this build is refused the same way
    dyn = huge_model(tmp_path / "dyn.onnx", [1, 3, "h", "w"])
    raises(ModelError, lambda: convert(dyn, "onnxruntime", tmp_path / "o", shapes={"x": (1, 3, 65536, 65536)}),
           "'x'", "[1, 3, 65536, 65536]", "48.0 GiB")
    assert not any(tmp_path.glob("o*")) and not any(tmp_path.glob("bundle*"))


# ---------------------------------------------------------------------------- arrays and frames

@pytest.fixture(scope="module")
def bundles(tmp_path_factory, effnet_onnx, calib_images):
    root = tmp_path_factory.mktemp("bad-input-bundles")
    return {t: edgesdk.package(effnet_onnx, t, root / t, calib=calib_images[:3]).out
            for t in ("x86-onnxruntime", "x86-openvino", "rpi5")}


# (target, native): every engine here, on the native engines and on the engines' Python packages
SESSIONS = [("x86-onnxruntime", False), ("x86-openvino", True), ("x86-openvino", False), ("rpi5", True),
            ("rpi5", False)]


@pytest.fixture(scope="module", params=SESSIONS, ids=[f"{t}-{'native' if n else 'python'}" for t, n in SESSIONS])
def model(request, bundles):
    from edgesdk.backends.base import Artifact

    target, native = request.param
    reason = NativeSession.unavailable(Artifact.load(bundles[target] / "model")) if native else None
    if reason:
        pytest.skip(reason)
    with edgesdk.load(bundles[target], native=native) as m:
        assert m.native == native
        yield m


@pytest.fixture(scope="module")
def photo(real_images):
    frame = read_image(real_images["skimage_coffee"])
    assert frame.shape == (400, 600, 3)  # the shapes and strides the error messages below name
    return frame


FEEDS = {  # name -> (bad feeds from good input x, None when it must give x's answer, else words of the error)
    "float64": (lambda x: {"images": x.astype(np.float64)}, ["'images'", "expected dtype float32, got float64"]),
    "int32": (lambda x: {"images": x.astype(np.int32)}, ["'images'", "expected dtype float32, got int32"]),
    "bool": (lambda x: {"images": x > 0}, ["'images'", "expected dtype float32, got bool"]),
    "rank 3": (lambda x: {"images": x[0]}, ["'images'", "expected shape [1, 3, 224, 224], got [3, 224, 224]"]),
    "rank 5": (lambda x: {"images": x[None]}, ["'images'", "got [1, 1, 3, 224, 224]"]),
    "wrong size": (lambda x: {"images": x[:, :, :112, :112]}, ["'images'", "got [1, 3, 112, 112]"]),
    "batch 2": (lambda x: {"images": np.repeat(x, 2, 0)}, ["'images'", "got [2, 3, 224, 224]"]),
    "a list": (lambda x: {"images": x.tolist()}, ["'images'", "expected a numpy array, got list"]),
    "missing input": (lambda x: {}, ["missing ['images']"]),
    "unknown input": (lambda x: {"images": x, "extra": x}, ["unknown ['extra']"]),
    "not a dict": (lambda x: x, ["feeds must be a dict"]),
    "fortran order": (lambda x: {"images": np.asfortranarray(x)}, None),
    "negative strides": (lambda x: {"images": np.ascontiguousarray(x[:, ::-1, ::-1, ::-1])[:, ::-1, ::-1, ::-1]},
                         None),
    "strided slice": (lambda x: {"images": np.repeat(x, 2, axis=3)[:, :, :, ::2]}, None),
    "read-only": (lambda x: {"images": np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)}, None),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FEEDS)
def test_bad_feeds_to_infer(model, photo, case):
    make, words = FEEDS[case]
    x = preprocess_reference(photo, model.spec)
    want = model.infer({"images": x})["logits"].copy()
    feeds = make(x)
    if words is None:
        got = model.infer(feeds)["logits"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    else:
        raises(ModelError, lambda: model.infer(feeds), model.root / "model", *words)
    np.testing.assert_array_equal(model.infer({"images": x})["logits"], want)  # the session still works


def _read_only(f):
    return np.frombuffer(np.ascontiguousarray(f).tobytes(), np.uint8).reshape(f.shape)


FRAMES = {  # name -> (bad frame from a 400x600 photo, "same" or the words of the native preprocessing's error)
    "0 rows": (lambda f: f[:0], ["empty image [0, 600, 3]"]),
    "0 columns": (lambda f: f[:, :0], ["empty image [400, 0, 3]"]),
    "1x1": (lambda f: np.ascontiguousarray(f[200:201, 300:301]), "same"),
    "1 row": (lambda f: np.ascontiguousarray(f[200:201]), "same"),
    "4 channels": (lambda f: np.concatenate([f, f[:, :, :1]], axis=2), ["HxWx3, got [400, 600, 4]"]),
    "grayscale": (lambda f: f[:, :, 0], ["HxWx3, got [400, 600]"]),
    "float32": (lambda f: f.astype(np.float32), ["dtype uint8, got float32"]),
    "int32": (lambda f: f.astype(np.int32), ["dtype uint8, got int32"]),
    "bool": (lambda f: f > 127, ["dtype uint8, got bool"]),
    "a list": (lambda f: f[:2, :2].tolist(), ["numpy array HxWx3 uint8, got list"]),
    "rows reversed": (lambda f: f[::-1], "same"),
    "ROI": (lambda f: f[50:350, 100:500], "same"),
    "read-only": (_read_only, "same"),
    "fortran order": (lambda f: np.asfortranarray(f), ["pixels must be packed", "np.ascontiguousarray"]),
    "columns reversed": (lambda f: f[:, ::-1], ["pixels must be packed", "strides [1800, -3, 1]"]),
    "RGB view": (lambda f: f[:, :, ::-1], ["pixels must be packed", "strides [1800, 3, -1]"]),
    "every other column": (lambda f: f[:, ::2], ["pixels must be packed", "strides [1800, 6, 1]"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FRAMES)
def test_bad_frames_to_model(model, photo, case):
    make, expect = FRAMES[case]
    frame = make(photo)
    if expect == "same":
        got = model(frame)
        want = model.infer({"images": preprocess_reference(np.ascontiguousarray(frame), model.spec)})
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=1e-3)
        assert got["topk"][0]["index"] == int(np.argmax(want["logits"]))
    else:
        raises(EdgeSDKError, lambda: model(frame), "frame", *expect)


@pytest.mark.parametrize("case", FRAMES)
def test_bad_frames_to_preprocess(photo, effnet_preprocess, monkeypatch, case):
    make, expect = FRAMES[case]
    frame = make(photo)
    for spec in (PreprocessSpec(**effnet_preprocess),
                 PreprocessSpec(size=(320, 256), resize="letterbox", layout="nhwc", dtype="uint8")):
        if expect == "same":
            got = preprocess(frame, spec)
            assert got.shape == spec.output_shape and got.dtype == spec.dtype
            np.testing.assert_allclose(got.astype(np.float32), preprocess_reference(frame, spec).astype(np.float32),
                                       rtol=0, atol=1.0 if spec.dtype == "uint8" else 1e-4)
        else:
            raises(EdgeSDKError, lambda: preprocess(frame, spec), "frame", *expect)
    # Without the native module the numpy reference runs: it reads any strides, and refuses the rest alike.
    monkeypatch.setattr(pre, "_native_module", lambda: None)
    spec = PreprocessSpec(**effnet_preprocess)
    if expect == "same" or "pixels must be packed" in expect:
        np.testing.assert_array_equal(preprocess(frame, spec), preprocess_reference(np.ascontiguousarray(frame), spec))
    else:
        raises(EdgeSDKError, lambda: preprocess(frame, spec), "frame", *expect)


def test_bad_preprocess_arguments(photo):
    spec = PreprocessSpec(size=(64, 48))
    raises(EdgeSDKError, lambda: preprocess(photo, {"size": [64, 48]}), "expected an edgesdk.PreprocessSpec, got dict")
    raises(EdgeSDKError, lambda: preprocess_reference(photo, None), "spec", "got NoneType")
    for threads in (0, -1, True, 1.5, 10**12):
        raises(EdgeSDKError, lambda: preprocess(photo, spec, threads=threads), "threads", repr(threads))
    raises(EdgeSDKError, lambda: preprocess(photo, spec, out=np.empty((1, 3, 48, 64), np.float64)),
           "out: expected [1, 3, 48, 64] float32, got [1, 3, 48, 64] float64")
    raises(EdgeSDKError, lambda: PreprocessSpec(size=(0, 48)), "size", "(0, 48)")
    raises(EdgeSDKError, lambda: PreprocessSpec.from_dict({"size": [64, 48], "scale": 2}), "unknown keys ['scale']")


# ---------------------------------------------------------------------------- target profiles

BASE = 'schema = 1\nname = "mine"\nengine = "onnxruntime"\nprecision = "fp32"\narch = "x86_64"\n'

PROFILES = {  # name -> (profile text, words of the TargetError)
    "unknown key": (BASE + "bogus = 1\n", ["unknown key 'bogus'", "known keys"]),
    "unknown [preprocess] key": (BASE + "[preprocess]\nsize = [224, 224]\nscale = 2\n", ["unknown keys ['scale']"]),
    "unknown [postprocess] param": (BASE + '[postprocess]\nkind = "topk"\ntop = 5\n', ["unknown param 'top'"]),
    "unknown [validate] key": (BASE + "[validate]\ncosine = 0.9\n", ["unknown key [validate] 'cosine'"]),
    "unknown [quantize] key": (BASE + "[quantize]\nimages = 100\n", ["unknown key [quantize] 'images'"]),
    "unknown [inputs.x] key": (BASE + "[inputs.x]\nsize = [1, 3]\n", ["unknown key [inputs.x] 'size'"]),
    "missing engine": (BASE.replace('engine = "onnxruntime"\n', ""), ["missing required key 'engine'"]),
    "unknown engine": (BASE.replace('"onnxruntime"', '"tflite"'), ["engine = 'tflite' is not one of"]),
    "engine a number": (BASE.replace('"onnxruntime"', "5"), ["engine = 5 is not one of"]),
    "unknown precision": (BASE.replace('"fp32"', '"int4"'), ["precision = 'int4' is not one of"]),
    "unknown schema": (BASE.replace("schema = 1", "schema = 2"), ["schema = 2"]),
    "name a number": (BASE.replace('"mine"', "5"), ["name must be a non-empty string, got 5"]),
    "threads a string": (BASE + 'threads = "4"\n', ["threads must be an integer", "'4'"]),
    "threads a bool": (BASE + "threads = true\n", ["threads must be an integer", "True"]),
    "inputs a list": (BASE + "inputs = [1, 2]\n", ["inputs must be a table", "[1, 2]"]),
    "postprocess a string": (BASE + 'postprocess = "topk"\n', ["postprocess must be a table", "'topk'"]),
    "validate a string": (BASE + 'validate = "strict"\n', ["validate must be a table"]),
    "quantize a number": (BASE + "quantize = 5\n", ["quantize must be a table"]),
    "engine_options a list": (BASE + "engine_options = [1]\n", ["engine_options must be a table"]),
    "min_cosine a string": (BASE + '[validate]\nmin_cosine = "high"\n', ["min_cosine must be a number", "'high'"]),
    "calib_images a string": (BASE + '[quantize]\ncalib_images = "all"\n', ["calib_images", "'all'"]),
    "float_layers a string": (BASE + '[quantize]\nfloat_layers = "stem"\n', ["float_layers", "stem, depthwise",
                                                                             "'stem'"]),
    "float_layers numbers": (BASE + '[quantize]\nfloat_layers = [1]\n', ["float_layers", "[1]"]),
    "shape with a bool": (BASE + "[inputs.x]\nshape = [true, 3]\n", ["[inputs.x] shape", "[True, 3]"]),
    "shape with 0": (BASE + "[inputs.x]\nshape = [1, 0]\n", ["[inputs.x] shape", "[1, 0]"]),
    "min > max": (BASE + "[inputs.x]\nmin = [1, 9]\nopt = [1, 5]\nmax = [1, 4]\n", ["min <= opt <= max"]),
    "topk k a string": (BASE + '[postprocess]\nkind = "topk"\nk = "five"\n', ["param 'k'", "'five'"]),
    "mean of 2": (BASE + "[preprocess]\nmean = [1.0, 2.0]\n", ["mean", "3 finite numbers"]),
    "not TOML": (BASE + "[[[\n", ["not a readable TOML profile"]),
    "not text": (b"\xff\xfe\x00 profile", ["not a readable TOML profile"]),
}


@pytest.mark.parametrize("case", PROFILES)
def test_bad_profiles(tmp_path, case):
    text, words = PROFILES[case]
    p = tmp_path / "mine.toml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    raises(TargetError, lambda: edgesdk.load_target(p), p, *words)


def test_unknown_or_missing_targets(tmp_path):
    raises(TargetError, lambda: edgesdk.load_target("no-such-board"), "unknown target 'no-such-board'", "rpi5")
    raises(TargetError, lambda: edgesdk.load_target(tmp_path / "nope.toml"), "nope.toml: no such target profile")
    (tmp_path / "dir.toml").mkdir()
    raises(TargetError, lambda: edgesdk.load_target(tmp_path / "dir.toml"), "dir.toml: is a directory")


# ---------------------------------------------------------------------------- bundles

def _edit(key, value):
    def edit(b):
        m = json.loads((b / "manifest.json").read_text())
        m[key] = value
        (b / "manifest.json").write_text(json.dumps(m))
    return edit


def _write(rel, data):
    return lambda b: (b / rel).write_bytes(data)


BUNDLES = {  # name -> (break a copy of a good bundle, error type, words, load's verify=)
    "unknown schema": (_edit("schema", 2), BundleError, ["manifest schema 2", "upgrade edgesdk"], True),
    "schema a string": (_edit("schema", "1"), BundleError, ["manifest schema '1'"], True),
    "no manifest": (lambda b: (b / "manifest.json").unlink(), BundleError, ["not a bundle (no manifest.json)"], True),
    "empty manifest": (_write("manifest.json", b""), BundleError, ["unreadable manifest"], True),
    "manifest a list": (_write("manifest.json", b"[]"), BundleError, ["JSON object"], True),
    "manifest lacks keys": (_write("manifest.json", b'{"schema": 1}'), BundleError, ["lacks keys", "'backend'"], True),
    "missing engine file": (lambda b: (b / "model" / "model.onnx").unlink(), BundleError,
                            ["file model/model.onnx is missing"], True),
    "missing engine file, unverified": (lambda b: (b / "model" / "model.onnx").unlink(), ModelError,
                                        ["model.onnx: no such model file"], False),
    "modified engine file": (_write("model/model.onnx", b"x"), BundleError,
                             ["model/model.onnx does not match its sha256"], True),
    "unknown backend": (_edit("backend", "tflite"), BundleError, ["backend 'tflite' is not one of"], False),
    "backend a list": (_edit("backend", ["onnxruntime"]), BundleError, ["'backend' must be a string"], False),
    "unknown precision": (_edit("precision", "int4"), BundleError, ["precision 'int4'"], False),
    "postprocess a string": (_edit("postprocess", "topk"), BundleError, ["'postprocess' must be an object or null"],
                             False),
    "unknown postprocess": (_edit("postprocess", {"kind": "nms"}), BundleError, ["postprocess kind 'nms'"], False),
    "bad preprocess": (_edit("preprocess", {"size": "big"}), BundleError, ["preprocess size", "'big'"], False),
    "versions a string": (_edit("versions", "1.0"), BundleError, ["'versions' must be an object"], False),
    "threads a string": (_edit("threads", "4"), BundleError, ["'threads' must be an integer or null"], False),
    "golden entries": (_edit("golden", [["in.npy"]]), BundleError, ["golden[0]"], False),
    "golden expected a list": (_edit("golden", [{"inputs": {}, "outputs": {}, "expected": ["x.npy"]}]), BundleError,
                               ["golden[0]", "\"expected\""], False),
    "golden expected not listed": (_edit("golden", [{"inputs": {}, "outputs": {}, "expected": {"logits": "e.npy"}}]),
                                   BundleError, ["golden file 'e.npy' is not covered"], False),
    "labels not listed": (_edit("labels", "names.txt"), BundleError, ["labels file 'names.txt' is not covered"], False),
    "artifact.json missing keys": (_write("model/artifact.json", b'{"backend": "onnxruntime"}'), BundleError,
                                   ["artifact.json: malformed artifact description", "precision"], False),
    "artifact.json a list": (_write("model/artifact.json", b"[1]"), BundleError, ["artifact.json: malformed"], False),
    "TensorRT engine not here": (_edit("backend", "tensorrt"), BackendUnavailable,
                                 ["bundle needs the tensorrt engine", "TensorRT is not installed"], False),
}


@pytest.mark.parametrize("case", BUNDLES)
def test_bad_bundles(bundles, tmp_path, case):
    brk, kind, words, verify = BUNDLES[case]
    if case == "TensorRT engine not here" and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the bundle's engine is present")
    b = tmp_path / "bundle"
    shutil.copytree(bundles["x86-onnxruntime"], b)
    brk(b)
    raises(kind, lambda: edgesdk.load(b, verify=verify), b, *words)


@pytest.mark.parametrize("target,module", [("x86-onnxruntime", "onnxruntime"), ("x86-openvino", "openvino"),
                                           ("rpi5", "ncnn")])
def test_engine_not_installed(bundles, monkeypatch, target, module):
    """A board without the engine's Python package: the bundle is refused naming it, unless it is an ncnn
    bundle and edgesdk._native has ncnn linked in (native OpenVINO loads the openvino package's libraries)."""
    from edgesdk.backends.base import Artifact

    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    raises(BackendUnavailable, lambda: edgesdk.load(bundles[target], native=False), bundles[target],
           f"bundle needs the {module} engine")
    if module == "ncnn" and NativeSession.unavailable(Artifact.load(bundles[target] / "model")) is None:
        with edgesdk.load(bundles[target]) as m:
            assert m.native and m.check().passed


def test_bad_bundle_paths(bundles, tmp_path):
    raises(BundleError, lambda: edgesdk.load(tmp_path / "nope"), "nope: no such bundle directory")
    raises(BundleError, lambda: edgesdk.load(tmp_path), "not a bundle (no manifest.json)")
    raises(BundleError, lambda: edgesdk.load(bundles["x86-onnxruntime"] / "report.md"), "no such bundle directory")
    (tmp_path / "junk.tar.gz").write_bytes(b"junk")
    raises(BundleError, lambda: edgesdk.load(tmp_path / "junk.tar.gz"), "junk.tar.gz: not a readable bundle archive")


# ---------------------------------------------------------------------------- command line

def cli_cases(model, bundle, images, tmp):
    """(argv, words of the one error line). In tmp: an empty dir `d` and a text file `f.txt`."""
    d, f, nope, o, b = tmp / "d", tmp / "f.txt", tmp / "nope", tmp / "o", tmp / "b"
    convert = ["convert", model, "--backend", "ncnn", "--out", o, "--json"]
    package = ["package", model, "--target", "rpi5", "--out", b, "--json"]
    return [
        (["inspect", nope / "m.onnx", "--json"], ["m.onnx: no such file"]),
        (["inspect", d, "--json"], ["d: is a directory"]),
        (["inspect", f, "--json"], ["f.txt: not"]),
        (["inspect", model, "--shape", "images=1x3xbadx2", "--json"], ["bad --shape 'images=1x3xbadx2'"]),
        (["inspect", model, "--shape", "images", "--json"], ["bad --shape 'images'"]),
        (["inspect", model, "--shape", "images=1x3x-1x2", "--json"], ["bad --shape 'images=1x3x-1x2'"]),
        (["inspect", model, "--shape", "nope=1x3x224x224", "--json"], ["no input named 'nope'", "['images']"]),
        (["check", nope / "m.onnx", "--json"], ["m.onnx: no such file"]),
        (["check", d, "--json"], ["d: is a directory"]),
        (["convert", nope / "m.onnx", *convert[2:]], ["m.onnx: no such file"]),
        (["convert", d, *convert[2:]], ["d: is a directory"]),
        (["convert", model, "--backend", "tflite", "--out", o, "--json"], ["unknown backend 'tflite'"]),
        ([*convert, "--precision", "int4"], ["--precision: invalid choice: 'int4'"]),
        ([*convert, "--shape", "images=x"], ["bad --shape 'images=x'"]),
        ([*convert, "--shape", "images=1x3x256x256"],
         ["input 'images' is fixed at [1, 3, 224, 224], got shape [1, 3, 256, 256]"]),
        ([*convert, "--images", nope], ["nope: no such image folder"]),
        ([*convert, "--images", f], ["f.txt: no such image folder"]),
        ([*convert, "--images", d], ["d: no images"]),
        (["convert", model, "--backend", "ncnn", "--out", f, "--json"], ["f.txt: exists and is not a directory"]),
        ([*convert, "--samples", "0"], ["samples", "got 0"]),
        ([*convert, "--mean", "1,2"], ["bad --mean '1,2'"]),
        (["package", nope / "m.onnx", *package[2:]], ["m.onnx: no such file"]),
        (["package", d, *package[2:]], ["d: is a directory"]),
        (["package", model, "--target", "no-such-board", "--out", b, "--json"], ["unknown target 'no-such-board'"]),
        (["package", model, "--target", nope / "t.toml", "--out", b, "--json"], ["t.toml: no such target profile"]),
        (["package", model, "--target", f, "--out", b, "--json"], ["unknown target"]),
        ([*package, "--shape", "1x3"], ["bad --shape '1x3'"]),
        ([*package, "--calib", nope], ["nope: no such image folder"]),
        ([*package, "--calib", d], ["d: no images"]),
        ([*package, "--labels", nope], ["nope: no such labels file"]),
        ([*package, "--labels", d], ["d: no such labels file"]),
        ([*package, "--sign", nope], ["nope: no such key file"]),
        ([*package, "--sign", f], ["not a PEM private key"]),
        (["package", model, "--target", "rpi5", "--out", tmp, "--json"], ["refusing to overwrite"]),
        (["run", nope, f, "--json"], ["nope: no such bundle directory"]),
        (["run", d, f, "--json"], ["not a bundle (no manifest.json)"]),
        (["run", bundle, nope / "x.jpg", "--json"], ["x.jpg: no such image file"]),
        (["run", bundle, d, "--json"], ["d: no such image file"]),
        (["run", bundle, f, "--json"], ["f.txt: not a readable image"]),
        (["run", bundle, f, "--threads", "0", "--json"], ["threads must be a positive integer", "got 0"]),
        (["run", bundle, f, "--trusted-key", nope, "--json"], ["nope: no such key file"]),
        (["bench", nope, "--json"], ["nope: no such bundle directory"]),
        (["bench", d, "--json"], ["not a bundle"]),
        (["bench", bundle, "--streams", "0", "--json"], ["streams must be an integer >= 1, got 0"]),
        (["bench", bundle, "--seconds", "-1", "--json"], ["seconds must be a positive number, got -1.0"]),
        (["bench", bundle, "--threads", "x", "--json"], ["--threads: invalid int value: 'x'"]),
        (["validate", nope, "--json"], ["nope: no such artifact directory"]),
        (["validate", f, "--json"], ["f.txt: no such artifact directory"]),
        (["keygen", nope / "key"], ["key: cannot write the key"]),
        (["keygen", f], ["exists; refusing to overwrite a key"]),
        (["demo", "--model", model], ["--model needs --images DIR too"]),
        (["demo", "--model", model, "--images", nope], ["nope: no such image folder"]),
        (["demo", "--model", model, "--images", images, "--target", "no-such-board"], ["unknown target 'no-such"]),
        (["targets", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["nosuchcommand"], ["invalid choice: 'nosuchcommand'"]),
        ([], ["the following arguments are required: command"]),
    ]


@pytest.mark.slow
def test_cli_user_errors_are_one_line_exit_2(bundles, effnet_onnx, calib_images, tmp_path, capsys):
    """Every subcommand given missing files, directories for files, bad shapes, precisions and targets."""
    (tmp_path / "d").mkdir()
    (tmp_path / "f.txt").write_text("not a model, an image, a bundle or a key\n")
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(calib_images[0], images / calib_images[0].name)
    failures = []
    for argv, words in cli_cases(effnet_onnx, bundles["x86-onnxruntime"], images, tmp_path):
        argv = [str(a) for a in argv]
        code = cli.main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        if not (code == 2 and len(lines) == 1 and lines[0].startswith("edgesdk: error: ")
                and all(w in lines[0] for w in words)):
            failures.append(f"edgesdk {' '.join(argv)} -> exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt", "images"]  # nothing written


def test_cli_entry_point_user_error(tmp_path):
    """Through the installed entry point as well: exit 2, one line, no traceback."""
    import subprocess

    res = subprocess.run([sys.executable, "-m", "edgesdk", "keygen", str(tmp_path / "no" / "key")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res
    assert "no/key: cannot write the key" in res.stderr
