"""edgesdk: package ONNX models for edge boards and run them with a native runtime.

Public API only, resolved on first use (module __getattr__): `import edgesdk; edgesdk.load(b)` loads
the device house (edgesdk.device) and the bundle's one engine, never the build house (edgesdk.build).
"""
from ._version import __version__
from .errors import (
    BackendUnavailable,
    BundleError,
    ConversionError,
    EdgeSDKError,
    ModelError,
    ParityError,
    TargetError,
    UnsupportedOpError,
)

# public name -> (module, attribute), imported when the name is first asked for
_LAZY = {
    "load": ("edgesdk.device.runtime", "load"),
    "PreprocessSpec": ("edgesdk.device.preprocess", "PreprocessSpec"),
    "preprocess": ("edgesdk.device.preprocess", "preprocess"),
    "package": ("edgesdk.build.package", "package"),
    "inspect": ("edgesdk.build.inspect", "inspect"),
    "load_target": ("edgesdk.build.targets", "load_target"),
}

__all__ = [
    "load",
    "package",
    "load_target",
    "PreprocessSpec",
    "preprocess",
    "__version__",
    "inspect",
    "EdgeSDKError",
    "ModelError",
    "UnsupportedOpError",
    "ConversionError",
    "BackendUnavailable",
    "ParityError",
    "BundleError",
    "TargetError",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'edgesdk' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # found here from now on, without this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
