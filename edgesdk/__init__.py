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


def load(path, threads=None, verify=True, trusted_keys=None, native=None):
    """Load a bundle (directory or .tar.gz) for inference on this device (see edgesdk.runtime.load)."""
    from .runtime import load as _load

    return _load(path, threads=threads, verify=verify, trusted_keys=trusted_keys, native=native)


def load_target(name_or_path):
    """A target profile by built-in name or .toml path, validated."""
    from .targets import load_target as _load

    return _load(name_or_path)


# These names are also submodules: importing the module first, then the function, keeps the
# function bound here (a later `import edgesdk.package` finds the module loaded and rebinds nothing).
from .package import package  # noqa: E402  (onnx and the engines load lazily, inside)
from .preprocess import PreprocessSpec, preprocess  # noqa: E402  (numpy only)

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
