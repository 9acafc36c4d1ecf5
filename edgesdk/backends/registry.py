"""Backend name -> implementation. Modules are imported on first use so no engine is required
to import edgesdk; third parties register through the `edgesdk.backends` entry point group."""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from edgesdk.errors import BackendUnavailable, EdgeSDKError

# name -> "module:attribute" of a Backend instance or class
BUILTIN: dict[str, str] = {
    "onnxruntime": "edgesdk.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgesdk.backends.openvino:OpenVINOBackend",
    "ncnn": "edgesdk.backends.ncnn:NcnnBackend",
    "tensorrt": "edgesdk.backends.tensorrt:TensorRTBackend",
    "triton": "edgesdk.backends.triton:TritonBackend",
    "rknn": "edgesdk.backends.rknn:RknnBackend",
}

_cache: dict[str, object] = {}


def names() -> list[str]:
    found = dict(BUILTIN)
    for ep in entry_points(group="edgesdk.backends"):
        found.setdefault(ep.name, ep.value)
    return sorted(found)


def get(name: str):
    """The Backend called `name`; EdgeSDKError naming the known ones if there is none."""
    if name in _cache:
        return _cache[name]
    target = BUILTIN.get(name)
    if target is None:
        for ep in entry_points(group="edgesdk.backends"):
            if ep.name == name:
                target = ep.value
                break
    if target is None:
        raise EdgeSDKError(f"unknown backend {name!r}; known: {', '.join(names())}")
    mod_name, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except ImportError as e:
        # Our own modules import vendors lazily, so this is a broken install, not a missing engine.
        raise BackendUnavailable(f"backend {name!r} failed to import: {e}") from e
    backend = obj() if isinstance(obj, type) else obj
    _cache[name] = backend
    return backend
