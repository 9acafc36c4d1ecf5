"""Exception hierarchy. Every failure a user can cause is an EdgeSDKError subclass.

The CLI turns any EdgeSDKError into one line on stderr and exit code 2; anything else is a bug.
"""


class EdgeSDKError(Exception):
    """Base of every error edgesdk raises on purpose."""


class ModelError(EdgeSDKError):
    """The ONNX model is missing, unreadable, invalid, or not what the caller said it is."""


class UnsupportedOpError(EdgeSDKError):
    """A backend cannot take an operator (or opset/domain) of the model."""

    def __init__(self, backend: str, ops: list[str], detail: str = ""):
        self.backend = backend
        self.ops = list(ops)
        msg = f"{backend} does not support: {', '.join(self.ops)}"
        super().__init__(f"{msg}; {detail}" if detail else msg)


class ConversionError(EdgeSDKError):
    """A converter ran and failed."""


class BackendUnavailable(EdgeSDKError):
    """The engine a backend needs is not installed (or not of a usable version)."""


class ParityError(EdgeSDKError):
    """A converted model does not match the ONNX reference within tolerance."""


class BundleError(EdgeSDKError):
    """A bundle is missing, incomplete, tampered with, or of an unknown schema."""


class TargetError(EdgeSDKError):
    """A target profile is missing or invalid."""
