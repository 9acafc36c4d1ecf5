"""A Triton model repository that serves an edgesdk bundle with Triton's python backend (build side).

    <out_dir>/<model_name>/config.pbtxt       backend "python": FRAMES + the model's inputs (optional, a request
                                              carries one), the model's outputs + RESULT, dynamic batching
    <out_dir>/<model_name>/1/model.py         imports edgesdk.backends.triton.python_model.TritonPythonModel
    <out_dir>/<model_name>/1/bundle/          the bundle (manifest.json, sha256 of every file), run by its engine
    <out_dir>/README.txt                      how to serve it

The server's Python needs edgesdk and the bundle's engine: `edgesdk serve` gives it this edgesdk through
EDGESDK_PYTHONPATH (Triton's python stub ignores PYTHONPATH) and runs the server tools/triton_env.sh sets up;
a server of your own (NVIDIA's container) needs `pip install edgesdk[ncnn|openvino|onnxruntime]` in it.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from ...errors import ConversionError
from .python_model import BUNDLE_DIR, FRAMES, RESULT

CONFIG_FILE = "config.pbtxt"
README_FILE = "README.txt"
VERSION = "1"
BUNDLE_ENGINES = ("ncnn", "openvino", "onnxruntime")
# Profile [engine_options] this repository reads; the rest go to the bundle's engine.
PYTHON_KEYS = ("triton_backend", "bundle_engine", "model_name", "max_batch_size", "preferred_batch_size",
               "max_queue_delay_us", "dynamic_batching", "instance_count", "workers")
MODEL_PY = '''\
# Written by edgesdk: serves ./bundle with Triton's python backend (edgesdk/backends/triton/python_model.py).
import os
import sys

# `edgesdk serve` names the edgesdk it runs here (the python stub does not read PYTHONPATH); a server of your
# own imports the edgesdk installed in its Python.
sys.path[:0] = [p for p in os.environ.get("EDGESDK_PYTHONPATH", "").split(os.pathsep) if p]

from edgesdk.backends.triton.python_model import TritonPythonModel  # noqa: E402,F401
'''


def _item_dims(shape, batched: bool) -> list[int]:
    dims = [d if isinstance(d, int) else -1 for d in shape]
    return dims[1:] if batched else dims


def _batchable(tensors) -> bool:
    """Triton's batch dim maps onto items of the bundle's own shape: every first dim must be 1 or dynamic."""
    return all(t.shape and (t.shape[0] == 1 or not isinstance(t.shape[0], int)) for t in tensors)


def _int(value, what: str, source, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConversionError(f"{source}: {what} must be an integer >= {minimum}, got {value!r}")
    return value


def serves_bundle(engine: str, options: dict) -> bool:
    """A profile whose model repository runs an edgesdk bundle in Triton's python backend (triton-cpu)."""
    return engine == "triton" and options.get("triton_backend") == "python"


def python_settings(options: dict, source) -> tuple[dict, dict]:
    """(the repository's settings, validated with defaults filled; the options left for the bundle's engine)
    from a profile's [engine_options]."""
    rest = {k: v for k, v in options.items() if k not in PYTHON_KEYS}
    engine = options.get("bundle_engine", "openvino")
    if engine not in BUNDLE_ENGINES:
        raise ConversionError(f"{source}: bundle_engine must be one of {', '.join(BUNDLE_ENGINES)}, got {engine!r}")
    mbs = _int(options.get("max_batch_size", 8), "max_batch_size", source, 0)
    preferred = options.get("preferred_batch_size", sorted({max(mbs // 2, 1), mbs}) if mbs else [])
    if not isinstance(preferred, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= mbs for b in preferred):
        raise ConversionError(f"{source}: preferred_batch_size must be a list of integers in 1..{mbs}, "
                              f"got {preferred!r}")
    batching = options.get("dynamic_batching", True)
    if not isinstance(batching, bool):
        raise ConversionError(f"{source}: dynamic_batching must be true or false, got {batching!r}")
    name = options.get("model_name")
    if name is not None and (not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", name)):
        raise ConversionError(f"{source}: model_name {name!r} must be a directory name of letters, digits, "
                              "'_', '.', '-'")
    return {"bundle_engine": engine, "model_name": name, "max_batch_size": mbs, "preferred_batch_size": preferred,
            "max_queue_delay_us": _int(options.get("max_queue_delay_us", 1000), "max_queue_delay_us", source, 0),
            "dynamic_batching": batching, "instance_count": _int(options.get("instance_count", 1),
                                                                   "instance_count", source, 1),
            "workers": _int(options.get("workers", 0), "workers", source, 0)}, rest


def python_model_config(name: str, inputs, outputs, settings: dict, threads: int | None = None,
                        source="bundle") -> tuple[dict, str | None]:
    """(Triton ModelConfig as a dict for to_pbtxt, why batching is off or None)."""
    from .convert import Enum, triton_dtype

    for t in list(inputs) + list(outputs):
        if t.name in (FRAMES, RESULT):
            raise ConversionError(f"{source}: tensor {t.name!r} has the name of the repository's own "
                                  f"{FRAMES}/{RESULT}; rename it in the model")
    mbs = settings["max_batch_size"]
    note = None
    if mbs and not _batchable(list(inputs) + list(outputs)):
        note = "not batched: the bundle's tensors do not all have a first dim of 1 or a dynamic one"
        mbs = 0
    batched = mbs > 0

    def tensor(t, optional=False):
        entry = {"name": t.name, "data_type": triton_dtype(t, source), "dims": _item_dims(t.shape, batched)}
        if optional:
            entry["optional"] = True
        return entry

    config: dict = {"name": name, "backend": "python", "max_batch_size": mbs,
                    "input": [{"name": FRAMES, "data_type": Enum("TYPE_UINT8"), "dims": [-1, -1, 3],
                               "optional": True}] + [tensor(t, optional=True) for t in inputs],
                    "output": [tensor(t) for t in outputs]
                    + [{"name": RESULT, "data_type": Enum("TYPE_STRING"), "dims": [1]}]}
    if batched and settings["dynamic_batching"]:
        config["dynamic_batching"] = {"preferred_batch_size": settings["preferred_batch_size"] or None,
                                      "max_queue_delay_microseconds": settings["max_queue_delay_us"]}
    config["instance_group"] = [{"count": settings["instance_count"], "kind": Enum("KIND_CPU")}]
    params = {"workers": settings["workers"], "threads": threads or 0}
    config["parameters"] = [{"key": k, "value": {"string_value": str(v)}} for k, v in params.items()]
    return config, note


def readme(root: Path, name: str, engine: str, config: dict, note: str | None) -> str:
    return "\n".join([
        "Triton Inference Server model repository written by edgesdk.",
        "",
        f'Model "{name}": an edgesdk {engine} bundle run by Triton\'s python backend, '
        f"max_batch_size {config['max_batch_size']}" + (f" ({note})." if note else "."),
        f"Inputs (a request carries one): {FRAMES} uint8 BGR [batch, H, W, 3], or "
        + ", ".join(i["name"] for i in config["input"][1:]) + ".",
        "Outputs: " + ", ".join(o["name"] for o in config["output"][:-1])
        + f", and {RESULT}: the post-processed result as JSON.",
        "",
        "Serve it on this machine (tools/triton_env.sh sets the server up):",
        "",
        f"    edgesdk serve {root.resolve()}",
        "",
        "or with a Triton of your own, whose Python has edgesdk and the engine installed",
        f"(pip install 'edgesdk[{engine}]'):",
        "",
        f"    tritonserver --model-repository={root.resolve()}",
        "",
    ])


def write_python_repository(bundle: Path, out_dir: Path, settings: dict, name: str) -> "object":
    """Copy a written bundle into a new model repository at out_dir (atomically); returns its Artifact."""
    from ...atomic import staged_dir
    from ...device.bundle import MODEL_DIR, read_manifest
    from ..base import Artifact
    from .convert import to_pbtxt

    bundle, out_dir = Path(bundle), Path(out_dir)
    manifest = read_manifest(bundle)
    model = Artifact.load(manifest.root / MODEL_DIR)
    name = settings.get("model_name") or name
    config, note = python_model_config(name, model.inputs, model.outputs, settings, manifest.get("threads"),
                                       source=bundle)
    with staged_dir(out_dir) as tmp:
        version = tmp / name / VERSION
        version.mkdir(parents=True)
        shutil.copytree(bundle, version / BUNDLE_DIR)
        (version / "model.py").write_text(MODEL_PY)
        (tmp / name / CONFIG_FILE).write_text(to_pbtxt(config))
        (tmp / README_FILE).write_text(readme(out_dir, name, manifest.backend, config, note))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        artifact = Artifact(backend="triton", precision=manifest["precision"], root=tmp, files=files,
                            inputs=model.inputs, outputs=model.outputs,
                            meta={"model_name": name, "triton_backend": "python", "bundle_engine": manifest.backend,
                                  "max_batch_size": config["max_batch_size"], "batching_note": note})
        artifact.save()
    artifact.root = out_dir
    return artifact
