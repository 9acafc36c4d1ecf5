"""Target profiles: every built-in one loads; bad user profiles are refused naming key and file."""
import json
import subprocess
import sys

import pytest

from edgesdk.errors import TargetError
from edgesdk.build.targets import list_targets, load_target

REQUIRED = {"jetson-orin-nano", "jetson-orin-nano-int8", "rpi4", "rpi5", "rk3588-cpu",
            "x86-openvino", "x86-openvino-int8", "intel-igpu", "x86-onnxruntime", "host", "triton-server"}


def test_builtin_profiles_load():
    names = set(list_targets())
    assert REQUIRED <= names
    for n in names:
        t = load_target(n)
        assert t.name == n and t.engine and t.precision and t.arch


def test_board_facts():
    assert load_target("rpi5").engine == "ncnn" and load_target("rpi5").threads == 4
    assert load_target("rk3588-cpu").precision == "int8"
    assert load_target("rk3588-cpu").engine_options["cpu_powersave"] == 2
    assert load_target("jetson-orin-nano").engine == "tensorrt"
    assert load_target("intel-igpu").engine_options["device"] == "GPU"


def write(tmp_path, text, name="mine.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = 'schema = 1\nname = "mine"\nengine = "ncnn"\nprecision = "fp16"\narch = "aarch64"\n'


def test_user_profile_with_inputs_and_preprocess(tmp_path):
    p = write(tmp_path, BASE + """
[inputs.images]
shape = [1, 3, 320, 320]
[inputs.x]
min = [1, 3, 32, 32]
opt = [1, 3, 320, 320]
max = [1, 3, 640, 640]
[preprocess]
size = [320, 320]
resize = "letterbox"
mean = [0.0, 0.0, 0.0]
std = [255.0, 255.0, 255.0]
[postprocess]
kind = "yolo"
""")
    t = load_target(p)
    assert t.shapes == {"images": (1, 3, 320, 320)}
    assert t.ranges["x"].max == (1, 3, 640, 640)
    assert t.preprocess.size == (320, 320) and t.preprocess.resize == "letterbox"


@pytest.mark.parametrize("extra,match", [
    ("colour = 'rgb'\n", "unknown key 'colour'"),
    ("[preprocess]\nsize = [2, 2]\nscale = 1\n", r"\[preprocess\].*unknown keys \['scale'\]"),
    ("[validate]\nmin_cos = 0.9\n", r"unknown key \[validate\] 'min_cos'"),
    ("[inputs.x]\nmin = [1, 3, 64, 64]\nopt = [1, 3, 32, 32]\nmax = [1, 3, 640, 640]\n", "min <= opt <= max"),
    ("[inputs.x]\nshape = [1, 0, 3]\n", "positive integers"),
    ("[postprocess]\nkind = 'ssd'\n", "kind"),
    ("threads = -1\n", "threads"),
])
def test_bad_profiles_name_key_and_file(tmp_path, extra, match):
    body = BASE.replace('arch = "aarch64"\n', 'arch = "aarch64"\n' + extra) if not extra.startswith("[") else BASE + extra
    p = write(tmp_path, body)
    with pytest.raises(TargetError, match=match) as e:
        load_target(p)
    assert str(p) in str(e.value)


def test_bad_values_and_files(tmp_path):
    with pytest.raises(TargetError, match="engine = 'tflite'"):
        load_target(write(tmp_path, BASE.replace('"ncnn"', '"tflite"')))
    with pytest.raises(TargetError, match="schema"):
        load_target(write(tmp_path, BASE.replace("schema = 1", "schema = 7")))
    with pytest.raises(TargetError, match="not a readable TOML"):
        load_target(write(tmp_path, "schema = = 1"))
    with pytest.raises(TargetError, match="unknown target 'nope'"):
        load_target("nope")
    with pytest.raises(TargetError, match="no such target profile"):
        load_target(tmp_path / "missing.toml")


def test_targets_cli_json():
    res = subprocess.run([sys.executable, "-m", "edgesdk", "targets", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["targets"]
    assert REQUIRED <= {r["name"] for r in rows}
    assert all({"engine", "precision", "arch"} <= set(r) for r in rows)


def test_int8_profiles_keep_stem_and_depthwise_float(effnet_onnx):
    """[quantize] float_layers: classes resolve to the model's ONNX nodes; a node name stays itself; an
    entry that is neither is refused naming it."""
    from edgesdk.errors import EdgeSDKError
    from edgesdk.build.model import load_model
    from edgesdk.build.quantize import QuantizeSettings, resolve_float_layers

    for name in ("x86-openvino-int8", "rk3588-cpu"):
        settings = QuantizeSettings.from_profile(load_target(name).quantize)
        assert settings.float_layers == ("stem", "depthwise")
    proto = load_model(effnet_onnx)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    depthwise = [n.name for n in convs if next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(depthwise) == 16 and convs[0].name not in depthwise
    assert resolve_float_layers(proto, ["stem"], effnet_onnx) == [convs[0].name]
    assert resolve_float_layers(proto, ["depthwise", "stem"], effnet_onnx) == depthwise + [convs[0].name]
    assert resolve_float_layers(proto, [convs[5].name, "stem", convs[5].name], effnet_onnx) == [convs[5].name,
                                                                                                convs[0].name]
    with pytest.raises(EdgeSDKError, match="float_layers entry 'convs' is neither a layer class"):
        resolve_float_layers(proto, ["convs"], effnet_onnx)
