"""edgesdk: package ONNX models for edge boards and run them with a native runtime.

Public API only. Build-side modules (onnx, converters) are imported when first used, so
`import edgesdk` works on a board that has numpy and one engine.
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


def inspect(model, shapes=None, probe=True):
    """Report on an ONNX model: I/O, ops, params, FLOPs and per-backend compatibility."""
    from .model import inspect as _inspect

    return _inspect(model, shapes=shapes, probe=probe)


def load_target(name_or_path):
    """A target profile by built-in name or .toml path, validated."""
    from .targets import load_target as _load

    return _load(name_or_path)


from .preprocess import PreprocessSpec, preprocess  # noqa: E402  (numpy only)

__all__ = [
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
