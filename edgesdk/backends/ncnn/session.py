"""Run an ncnn artifact (model.param + model.bin written by convert.py) from Python.

Device side: imports numpy and, when a session opens, the ncnn package — nothing of the converter.

Thread-safety: one NcnnSession (one ncnn.Net, immutable after loading) may be shared by many
threads; every run() makes its own ncnn.Extractor.
"""
from __future__ import annotations

import numpy as np

from pathlib import Path

from edgesdk.errors import BackendUnavailable, BundleError, EdgeSDKError, ModelError
from edgesdk.backends.base import Artifact, Closable, TensorInfo, check_feeds, check_threads
from edgesdk.backends.ncnn.param import read_param

SUPPORTED_PRECISIONS = ("fp32", "fp16", "int8")

# Layers that only read their input blob and always write a new output. An ncnn.Mat over a numpy
# buffer has no reference count: a layer that runs in place makes ncnn dereference that missing
# count (a segfault) and would write into the caller's array, and many layers hand their input on
# unchanged as an alias. So an input is wrapped zero-copy only when every consumer is one of these.
ZERO_COPY_CONSUMERS = frozenset({
    "Convolution", "ConvolutionDepthWise", "Convolution1D", "Convolution3D",
    "Deconvolution", "DeconvolutionDepthWise", "InnerProduct",
})


def _import_ncnn():
    try:
        import ncnn
    except ImportError as e:
        raise BackendUnavailable(f"the ncnn Python package is not installed ({e}); pip install ncnn") from e
    return ncnn


def _fmt(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def param_layers(param_text: str, source: str = "model.param") -> list[tuple[str, list[str], list[str]]]:
    """(layer type, input blobs, output blobs) per layer of a text ncnn .param file (param.read_param)."""
    return [(layer.type, layer.inputs, layer.outputs) for layer in read_param(param_text, source, BundleError)]


def check_int8_weights(artifact: Artifact, param: Path, weights: Path) -> None:
    """ncnn reads weights without checking the file's length, so an int8 param beside a bin of another
    build would load and compute garbage: the int8 writer recorded the exact size, checked here."""
    want = (artifact.meta.get("int8") or {}).get("bin_size") if artifact.precision == "int8" else None
    if want is not None and weights.is_file() and weights.stat().st_size != want:
        raise ModelError(f"{weights}: {weights.stat().st_size} bytes where the int8 build wrote {want}; "
                         f"this weight file does not belong to {param.name}")


def zero_copy_safe(layers: list[tuple[str, list[str], list[str]]], blob: str) -> bool:
    """Whether every layer reading `blob` (through Split, which aliases it) is in ZERO_COPY_CONSUMERS."""
    for kind, ins, outs in layers:
        if blob in ins:
            if kind == "Split":
                if not all(zero_copy_safe(layers, o) for o in outs):
                    return False
            elif kind not in ZERO_COPY_CONSUMERS:
                return False
    return True


def shape_matches(expected: tuple, got: tuple) -> bool:
    """True when `got` has the rank of `expected` and equals it on every fixed dim (strings are dynamic)."""
    if len(expected) != len(got):
        return False
    return all(isinstance(e, str) or e == g for e, g in zip(expected, got))


class NcnnSession(Closable):
    """An ncnn.Net loaded from an artifact; run() takes and returns tensors keyed by ONNX names."""

    def __init__(self, artifact: Artifact, threads: int | None = None):
        check_threads(threads)
        if artifact.precision not in SUPPORTED_PRECISIONS:
            raise ModelError(f"{artifact.root}: ncnn sessions run {SUPPORTED_PRECISIONS} artifacts, this one is {artifact.precision!r}")
        meta = artifact.meta
        try:
            self._in_blobs = [(t, meta["inputs"][t.name]["blob"], meta["inputs"][t.name]["batch_axis"]) for t in artifact.inputs]
            self._out_blobs = [(t, meta["outputs"][t.name]["blob"], meta["outputs"][t.name]["batch_axis"]) for t in artifact.outputs]
            param, weights = artifact.path(meta["param"]), artifact.path(meta["bin"])
        except (KeyError, TypeError) as e:
            raise ModelError(f"{artifact.root}: ncnn artifact metadata lacks {e} (was it written by the ncnn backend?)") from None
        for p in (param, weights):
            if not p.is_file():
                raise ModelError(f"{p}: ncnn model file not found")
        check_int8_weights(artifact, param, weights)

        ncnn = _import_ncnn()
        self._ncnn = ncnn
        self.inputs: list[TensorInfo] = list(artifact.inputs)
        self.outputs: list[TensorInfo] = list(artifact.outputs)
        self.precision = artifact.precision
        self.root = artifact.root

        net = ncnn.Net()
        # Options must be set before load_param: layers pick their kernels (and weight storage) at load.
        # fp32 artifacts must not be silently demoted to fp16 storage/arithmetic, which ncnn does by default.
        fp16 = artifact.precision == "fp16"
        net.opt.use_fp16_storage = fp16
        net.opt.use_fp16_packed = fp16
        # fp16 arithmetic (ARMv8.2 only; x86 has none) rounds every intermediate, so it is on only when
        # the build asked for it: otherwise an fp16 artifact differs from fp32 in storage alone.
        net.opt.use_fp16_arithmetic = fp16 and bool(meta.get("fp16_arithmetic", False))
        if meta.get("cpu_powersave"):  # process-wide in ncnn: the board's profile owns the process
            ncnn.set_cpu_powersave(int(meta["cpu_powersave"]))
        net.opt.use_bf16_storage = False
        # int8 artifacts: quantized layers (param key 8) run ncnn's int8 kernels, the rest stays fp32.
        net.opt.use_int8_inference = artifact.precision == "int8"
        if threads is not None:
            net.opt.num_threads = threads
        self.threads = net.opt.num_threads
        try:
            layers = param_layers(param.read_text(), str(param))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ModelError(f"{param}: not a readable ncnn param file: {e}") from None
        # blob -> whether run() may hand ncnn the caller's buffer itself
        self._zero_copy = {blob: zero_copy_safe(layers, blob) for _, blob, _ in self._in_blobs}
        if net.load_param(str(param)) != 0:
            net.clear()
            raise ModelError(f"{param}: ncnn could not load this param file")
        if net.load_model(str(weights)) != 0:
            net.clear()
            raise ModelError(f"{weights}: ncnn could not load these weights (does it belong to {param.name}?)")
        self._net = net

    def _prepare(self, feeds: dict) -> list[np.ndarray]:
        """Checked, batch-stripped, C-contiguous float32 arrays in input order."""
        check_feeds(self.inputs, feeds, str(self.root))
        arrays = []
        for info, _, batch_axis in self._in_blobs:
            a = feeds[info.name]
            if batch_axis is not None:
                if a.shape[batch_axis] != 1:
                    raise ModelError(f"input {info.name!r}: ncnn runs batch 1 only, got batch {a.shape[batch_axis]}")
                a = a.squeeze(axis=batch_axis)
            # ncnn.Mat reads the raw buffer and ignores strides: it must be C-contiguous.
            arrays.append(np.ascontiguousarray(a))
        return arrays

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._net is None:
            raise EdgeSDKError("this ncnn session is closed")
        arrays = self._prepare(feeds)
        ncnn = self._ncnn
        # ncnn.Mat wraps each array without holding a reference to it: `arrays` and `mats` stay bound
        # in this frame until every output is extracted, so no buffer is freed under ncnn. An input
        # whose first layer may run in place gets an ncnn-owned copy instead (see ZERO_COPY_CONSUMERS).
        mats = [
            ncnn.Mat(a) if self._zero_copy[blob] else ncnn.Mat(a).clone()
            for (_, blob, _), a in zip(self._in_blobs, arrays)
        ]
        results: dict[str, np.ndarray] = {}
        with self._net.create_extractor() as ex:
            for (info, blob, _), m in zip(self._in_blobs, mats):
                if ex.input(blob, m) != 0:
                    raise ModelError(f"ncnn rejected input {info.name!r} (blob {blob})")
            for info, blob, batch_axis in self._out_blobs:
                rc, out = ex.extract(blob)
                if rc != 0:
                    raise ModelError(f"ncnn failed to compute output {info.name!r} (blob {blob}, code {rc})")
                # Copy out of ncnn's pooled memory: the next run may reuse it.
                y = np.array(out, copy=True)
                if batch_axis is not None:
                    y = np.expand_dims(y, batch_axis)
                if not shape_matches(info.shape, y.shape):
                    raise ModelError(
                        f"ncnn output {info.name!r} has shape {_fmt(y.shape)}, the model says {_fmt(info.shape)}"
                    )
                if y.dtype != np.dtype(info.dtype):
                    y = y.astype(info.dtype)
                results[info.name] = y
        del mats, arrays
        return results

    def blobs(self, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        """ncnn blobs by name (any layer's output, not only the model's) for one sample, as float32 arrays
        in ncnn's layout without the batch axis: what int8 calibration reads (a blob an int8 layer hands
        on requantized comes back as its int8 values). Light mode is off, so a blob extracted later does
        not free one still to be read."""
        if self._net is None:
            raise EdgeSDKError("this ncnn session is closed")
        # ncnn-owned copies: nothing here depends on the caller's buffers staying alive.
        mats = [self._ncnn.Mat(a).clone() for a in self._prepare(feeds)]
        results: dict[str, np.ndarray] = {}
        with self._net.create_extractor() as ex:
            ex.set_light_mode(False)
            for (info, blob, _), m in zip(self._in_blobs, mats):
                if ex.input(blob, m) != 0:
                    raise ModelError(f"ncnn rejected input {info.name!r} (blob {blob})")
            for name in names:
                rc, out = ex.extract(name)
                if rc != 0:
                    raise ModelError(f"{self.root}: ncnn could not compute blob {name!r} (code {rc})")
                results[name] = np.array(out, dtype=np.float32, copy=True)
        return results

    def close(self) -> None:
        if self._net is not None:
            self._net.clear()
            self._net = None

    def __del__(self):
        # A session dropped without close() still frees ncnn's memory.
        if getattr(self, "_net", None) is not None:
            self.close()
