"""OpenVINO session (device side: numpy and openvino only): an IR compiled for a device.

Thread-safety: an OpenVINOSession shares one compiled model; each calling thread gets its own
InferRequest, so run() may be called from several threads at once.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgesdk.errors import BackendUnavailable, BundleError, EdgeSDKError, ModelError
from edgesdk.backends.base import Artifact, Closable, check_feeds, check_threads, first_line

XML_FILE, BIN_FILE = "model.xml", "model.bin"
HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# Compute precision per stored precision, never left to the CPU plugin: where the CPU has AMX/
# AVX512-BF16 it defaults to bf16, which on EfficientNet-Lite0 measured cosine 0.990 and top-1 0.92
# against fp32. f16 is OpenVINO's own default on ARM, where fp16 artifacts are meant to run.
DEFAULT_INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "int8": "f32"}  # int8: the layers left in float
INFERENCE_PRECISIONS = ("f32", "f16", "bf16")


def default_inference_precision(precision: str) -> str:
    """fp16 weights compute in f16 where the CPU does f16 natively (ARM); on x86 OpenVINO emulates
    f16 more slowly than f32 (measured: EfficientNet-Lite0 4.9 ms f16 vs 3.4 ms f32), so f32 there.
    Never the plugin's own default: on CPUs with AMX/AVX512-BF16 that is bf16, which loses top-1."""
    import platform

    if precision == "fp16" and platform.machine().lower() not in ("aarch64", "arm64", "armv7l"):
        return "f32"
    return DEFAULT_INFERENCE_PRECISION[precision]


def ov_module():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("openvino is not installed: pip install 'edgesdk[openvino]'") from None
    return openvino


def port_index(ports, name: str) -> int:
    for i, port in enumerate(ports):
        if name in port.get_names():
            return i
    raise KeyError(name)


def _shared_tensor(ov, a: np.ndarray):
    """An ov.Tensor over the array's own memory; only a non-contiguous array is copied (OpenVINO needs C order),
    or a read-only one (np.frombuffer of bytes, a memory-mapped file), which ov.Tensor refuses to share."""
    if not a.flags.c_contiguous or not a.flags.writeable:
        a = np.array(a, order="C")
    return ov.Tensor(a, shared_memory=True)


class OpenVINOSession(Closable):
    """An OpenVINO IR compiled for `device`. Inputs are passed zero-copy; outputs are copied out."""

    def __init__(self, artifact: Artifact | str | Path, threads: int | None = None,
                 hint: str | None = None, device: str | None = None, inference_precision: str | None = None):
        """hint, device and `inference_precision` (f32 | f16 | bf16) default to what the artifact was
        built with (the profile's [engine_options]), then LATENCY, CPU and default_inference_precision()."""
        check_threads(threads)
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact)
        if artifact.backend != "openvino":
            raise BundleError(f"{artifact.root}: artifact is for {artifact.backend!r}, not openvino")
        built = artifact.meta.get("session") or {}
        hint = hint or built.get("hint", "LATENCY")
        device = device or built.get("device", "CPU")
        if hint not in HINTS:
            raise EdgeSDKError(f"unknown OpenVINO performance hint {hint!r}; choose one of {', '.join(HINTS)}")
        if inference_precision is None:
            if artifact.precision not in DEFAULT_INFERENCE_PRECISION:
                raise BundleError(f"{artifact.root}: unknown precision {artifact.precision!r}")
            inference_precision = built.get("inference_precision") or default_inference_precision(artifact.precision)
        if inference_precision not in INFERENCE_PRECISIONS:
            raise EdgeSDKError(f"inference_precision must be f32, f16 or bf16, got {inference_precision!r}")
        ov = self._ov = ov_module()
        core = ov.Core()
        if device not in core.available_devices:
            raise BackendUnavailable(
                f"OpenVINO device {device!r} is not available here; available: {', '.join(core.available_devices)}")
        xml = artifact.path(XML_FILE)
        if not xml.is_file() or not artifact.path(BIN_FILE).is_file():
            raise BundleError(f"{artifact.root}: missing {XML_FILE} or {BIN_FILE}")
        config: dict[str, object] = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self._compiled = core.compile_model(core.read_model(str(xml)), device, config)
        except Exception as e:
            raise BundleError(f"{xml}: OpenVINO cannot load it: {first_line(e)}") from None
        self.artifact = artifact
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        ov_names = artifact.meta.get("tensor_names", {})  # ONNX name -> IR name where they differ
        try:
            self._in_idx = [port_index(self._compiled.inputs, ov_names.get(t.name, t.name)) for t in self.inputs]
            self._out_idx = [port_index(self._compiled.outputs, ov_names.get(t.name, t.name)) for t in self.outputs]
        except KeyError as e:
            raise BundleError(f"{xml}: no tensor named {e} in the IR") from None
        self._out_pairs = [(t.name, i) for t, i in zip(self.outputs, self._out_idx)]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._requests: list = []  # every thread's request, so close() can release them all

    def _request(self):
        """This thread's InferRequest, created on first use."""
        req = getattr(self._local, "request", None)
        if req is None:
            if self._compiled is None:
                raise EdgeSDKError(f"{self.artifact.root}: session is closed")
            with self._lock:
                req = self._compiled.create_infer_request()
                self._requests.append(req)
            self._local.request = req
        return req

    def _tensors(self, feeds: dict[str, np.ndarray]) -> dict[int, object]:
        check_feeds(self.inputs, feeds, str(self.artifact.root))
        return {i: _shared_tensor(self._ov, feeds[t.name]) for t, i in zip(self.inputs, self._in_idx)}

    def _collect(self, request) -> dict[str, np.ndarray]:
        # The request reuses its output buffers on the next run: hand out copies.
        return {name: request.get_output_tensor(i).data.copy() for name, i in self._out_pairs}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._compiled is None:
            raise EdgeSDKError(f"{self.artifact.root}: session is closed")
        tensors = self._tensors(feeds)
        req = self._request()
        try:
            for i, tensor in tensors.items():
                req.set_input_tensor(i, tensor)
            req.infer()
        except Exception as e:
            raise ModelError(f"{self.artifact.root}: OpenVINO failed to run: {first_line(e)}") from None
        return self._collect(req)

    def run_async_many(self, feeds_list: list[dict[str, np.ndarray]], jobs: int = 0) -> list[dict[str, np.ndarray]]:
        """Run every feed dict asynchronously on `jobs` InferRequests (0 = the plugin's optimal number,
        more with hint="THROUGHPUT") and return the results in the order given.

        Own requests with start_async/wait rather than AsyncInferQueue: a Python callback on the
        queue runs on OpenVINO's worker threads, and we measured a deadlock when the compiled model
        was destroyed (its destructor joins a worker, holding the GIL the worker was waiting for).
        Here every Python step happens on the calling thread.
        """
        if self._compiled is None:
            raise EdgeSDKError(f"{self.artifact.root}: session is closed")
        tensors = [self._tensors(f) for f in feeds_list]  # validated up front; kept alive until the end
        if not tensors:
            return []
        if not isinstance(jobs, int) or jobs < 0:
            raise EdgeSDKError(f"jobs must be a non-negative integer, got {jobs!r}")
        n = jobs or int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        requests = [self._compiled.create_infer_request() for _ in range(min(max(n, 1), len(tensors)))]
        results: list = [None] * len(tensors)
        try:
            for k, t in enumerate(tensors):
                req = requests[k % len(requests)]
                if k >= len(requests):  # the request still holds job k - n: collect that first
                    req.wait()
                    results[k - len(requests)] = self._collect(req)
                for i, tensor in t.items():
                    req.set_input_tensor(i, tensor)
                req.start_async()
            for k in range(max(0, len(tensors) - len(requests)), len(tensors)):
                req = requests[k % len(requests)]
                req.wait()
                results[k] = self._collect(req)
        except Exception as e:
            for req in requests:  # none may still be reading our inputs when we return
                try:
                    req.wait()
                except Exception:
                    pass
            raise ModelError(f"{self.artifact.root}: OpenVINO failed to run: {first_line(e)}") from None
        return results

    def close(self) -> None:
        with self._lock:
            self._requests.clear()
        self._local = threading.local()
        self._compiled = None
