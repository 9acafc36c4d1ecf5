"""OpenVINO: ONNX -> IR (model.xml + model.bin) with convert_model/save_model, and a CPU session.

Thread-safety: an OpenVINOSession shares one compiled model; each calling thread gets its own
InferRequest, so run() may be called from several threads at once. The session side imports
only openvino and numpy; convert() pulls in the build side (onnx) for names and error reports.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, BundleError, ConversionError, EdgeSDKError, ModelError, UnsupportedOpError
from .base import Artifact, ConvertOptions, TensorInfo
from .onnxruntime import check_feeds, check_threads

XML_FILE, BIN_FILE = "model.xml", "model.bin"
HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# Compute precision per stored precision, never left to the CPU plugin: where the CPU has AMX/
# AVX512-BF16 it defaults to bf16, which on EfficientNet-Lite0 measured cosine 0.990 and top-1 0.92
# against fp32. f16 is OpenVINO's own default on ARM, where fp16 artifacts are meant to run.
DEFAULT_INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "int8": "f32"}  # int8: the layers left in float
INFERENCE_PRECISIONS = ("f32", "f16", "bf16")
# A profile's [engine_options] this backend takes; they travel in the artifact to the session.
SESSION_OPTIONS = {"device": str, "hint": str, "inference_precision": str}


def default_inference_precision(precision: str) -> str:
    """fp16 weights compute in f16 where the CPU does f16 natively (ARM); on x86 OpenVINO emulates
    f16 more slowly than f32 (measured: EfficientNet-Lite0 4.9 ms f16 vs 3.4 ms f32), so f32 there.
    Never the plugin's own default: on CPUs with AMX/AVX512-BF16 that is bf16, which loses top-1."""
    import platform

    if precision == "fp16" and platform.machine().lower() not in ("aarch64", "arm64", "armv7l"):
        return "f32"
    return DEFAULT_INFERENCE_PRECISION[precision]


def session_options(engine: dict, precision: str) -> dict:
    unknown = sorted(set(engine) - set(SESSION_OPTIONS))
    if unknown:
        raise ConversionError(f"openvino backend: unknown engine option(s) {unknown}; known: {sorted(SESSION_OPTIONS)}")
    for key, kind in SESSION_OPTIONS.items():
        if key in engine and not isinstance(engine[key], kind):
            raise ConversionError(f"openvino backend: engine option {key} must be {kind.__name__}, got {engine[key]!r}")
    if engine.get("hint", "LATENCY") not in HINTS:
        raise ConversionError(f"openvino backend: hint {engine['hint']!r} is not one of {', '.join(HINTS)}")
    if engine.get("inference_precision", "f32") not in INFERENCE_PRECISIONS:
        raise ConversionError(f"openvino backend: inference_precision {engine['inference_precision']!r} is not "
                              f"one of {', '.join(INFERENCE_PRECISIONS)}")
    return dict(engine)


def _ov():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("openvino is not installed: pip install 'edgesdk[openvino]'") from None
    return openvino


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


# ---------------------------------------------------------------------------- convert (build side)

# Lines of the ONNX frontend's report, e.g. "-- No conversion rule found for operations: Det-13, MaxUnpool-13"
_NO_RULE = re.compile(r"No conversion rule found for operations:\s*(.+)")
_FAILED = re.compile(r"Conversion is failed for:\s*(.+)")
_VALUE_INFO = re.compile(r"Unsupported value_info type:\s*(\S+)")


def _unsupported_ops(message: str) -> list[str]:
    """Op names from the frontend's summary, opset suffix dropped: 'Det-13' -> 'Det'."""
    ops: list[str] = []
    for pattern in (_NO_RULE, _FAILED):
        for m in pattern.finditer(message):
            for item in m.group(1).split(","):
                op = re.sub(r"-(\d+|X)$", "", item.strip())
                if op and op not in ops:
                    ops.append(op)
    return ops


def _producer_op(proto, value: str) -> str | None:
    for node in proto.graph.node:
        if value in node.output:
            return f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    return None


def _conversion_error(e: Exception, proto, model: Path) -> EdgeSDKError:
    msg = str(e)
    ops = _unsupported_ops(msg)
    if ops:
        return UnsupportedOpError("openvino", ops, f"{model}: OpenVINO's ONNX frontend has no conversion for them")
    m = _VALUE_INFO.search(msg)
    if m:  # a sequence/map output (e.g. skl2onnx's ZipMap) has no OpenVINO tensor type
        value = m.group(1)
        op = _producer_op(proto, value)
        return UnsupportedOpError(
            "openvino", [op or value],
            f"{model}: tensor {value!r} is not a plain tensor (sequence or map), which OpenVINO cannot represent")
    return ConversionError(f"{model}: OpenVINO convert_model failed: {_first_line(e)}")


def _port_index(ports, name: str) -> int:
    for i, port in enumerate(ports):
        if name in port.get_names():
            return i
    raise KeyError(name)


def _port(ports, name: str, position: int):
    try:
        return ports[_port_index(ports, name)]
    except KeyError:
        return ports[position]


def _check_ranges(inputs: list[TensorInfo], ranges: dict, source: Path) -> None:
    by_name = {t.name: t for t in inputs}
    for name, r in ranges.items():
        if name not in by_name:
            raise ModelError(f"{source}: no input named {name!r}; inputs are {sorted(by_name)}")
        rank = len(by_name[name].shape)
        for what in ("min", "opt", "max"):
            if len(getattr(r, what)) != rank:
                raise ModelError(
                    f"{source}: input {name!r} has rank {rank} {list(by_name[name].shape)}, "
                    f"got {what} {list(getattr(r, what))}")
        if any(lo > hi or lo < 1 for lo, hi in zip(r.min, r.max)):
            raise ModelError(f"{source}: input {name!r}: range min {list(r.min)} must be >= 1 and <= max {list(r.max)}")


def ignored_ops(ov_model, proto, nodes: list[str], source: Path) -> list[str]:
    """OpenVINO op names for ONNX nodes to keep in float. convert_model names an op after its ONNX
    node or, for some ops, after the node's output tensor, and splits some nodes in two: Conv with a
    bias becomes '<name>/WithoutBiases' + '<name>', Gemm '<..>/WithoutBiases' + an Add named after
    the output. Every op whose name is the node's or an output's, or starts with one plus '/', is taken."""
    outputs = {n.name: list(n.output) for n in proto.graph.node}
    missing = [n for n in nodes if n not in outputs]
    if missing:
        raise ConversionError(f"{source}: nodes to keep in float {missing} are not in the model")
    names = [op.get_friendly_name() for op in ov_model.get_ordered_ops()]
    found: list[str] = []
    for node in nodes:
        keys = [node, *outputs[node]]
        hits = [n for n in names if any(n == k or n.startswith(k + "/") for k in keys)]
        if not hits:
            raise ConversionError(f"{source}: ONNX node {node!r} has no counterpart in the OpenVINO model")
        found.extend(h for h in hits if h not in found)
    return found


def quantize_int8(ov_model, proto, options: ConvertOptions, source: Path):
    """NNCF post-training quantization: int8 weights per channel and activations per tensor
    (NNCF's performance preset), fast bias correction; ONNX nodes in options.exclude stay float.
    calib_method "minmax" takes NNCF's min/max range estimator; "kl" and "aciq" its default, which
    NNCF has no KL or ACIQ counterpart of."""
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError:
        raise BackendUnavailable("OpenVINO int8 needs NNCF: pip install 'edgesdk[openvino]'") from None
    from ..quantize import quiet_build_tools

    if not options.calibration:
        raise ConversionError(f"{source}: int8 needs calibration feeds (images through the target's preprocessing)")
    ignored = ignored_ops(ov_model, proto, options.exclude, source)
    in_ports = list(ov_model.inputs)
    data = [{i: feed[_port_onnx_name(port, feed)] for i, port in enumerate(in_ports)} for feed in options.calibration]
    extra = {}
    if options.calib_method == "minmax":
        extra["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    try:
        with quiet_build_tools():
            return nncf.quantize(ov_model, nncf.Dataset(data), subset_size=len(data),
                                 ignored_scope=nncf.IgnoredScope(names=ignored), **extra)
    except Exception as e:
        raise ConversionError(f"{source}: NNCF quantization failed: {_first_line(e)}") from e


def _port_onnx_name(port, feed: dict) -> str:
    for name in port.get_names():
        if name in feed:
            return name
    raise ConversionError(f"calibration feeds have {sorted(feed)}; the model input is {sorted(port.get_names())}")


class OpenVINOBackend:
    name = "openvino"
    precisions = ("fp32", "fp16", "int8")

    def available(self) -> str | None:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed: pip install 'edgesdk[openvino]'"
        return None

    def convert(self, model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
        """ONNX -> IR. `options.shapes` fixes inputs, `options.ranges` bounds their dynamic dims;
        others stay dynamic. fp16 stores fp16 weights (compress_to_fp16); the CPU computes in fp32.
        int8 quantizes the IR with NNCF on `options.calibration` (see quantize_int8)."""
        from ..model import fix_input_shapes, graph_inputs, io_dicts, load_model
        from ..atomic import staged_dir

        options = options or ConvertOptions()
        if options.precision not in self.precisions:
            raise ConversionError(
                f"openvino backend: precision {options.precision!r} is not supported yet; "
                f"supported: {', '.join(self.precisions)}")
        model, out_dir = Path(model), Path(out_dir)
        session = session_options(options.engine, options.precision)
        proto = load_model(model)
        inputs = [TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(proto))]
        outputs = [TensorInfo.from_dict(d) for d in io_dicts(proto.graph.output)]
        if options.shapes:
            fix_input_shapes(proto, options.shapes, source=model)  # checks names, ranks, static dims
        _check_ranges(inputs, options.ranges, model)

        ov = _ov()
        try:
            ov_model = ov.convert_model(str(model))
        except Exception as e:
            raise _conversion_error(e, proto, model) from e

        # convert_model keeps ONNX names as tensor names; if one were lost, ports keep the ONNX order.
        in_ports = [_port(ov_model.inputs, t.name, k) for k, t in enumerate(inputs)]
        out_ports = [_port(ov_model.outputs, t.name, k) for k, t in enumerate(outputs)]
        renamed = {t.name: p.get_any_name() for t, p in zip(inputs + outputs, in_ports + out_ports)
                   if t.name not in p.get_names()}
        by_name = dict(zip([t.name for t in inputs], in_ports))
        new_shapes = {
            by_name[name]: ov.PartialShape([ov.Dimension(lo, hi) for lo, hi in zip(r.min, r.max)])
            for name, r in options.ranges.items()
        }
        new_shapes.update({by_name[name]: ov.PartialShape(list(s)) for name, s in options.shapes.items()})
        if new_shapes:
            try:
                ov_model.reshape(new_shapes)
            except Exception as e:
                raise ConversionError(f"{model}: OpenVINO cannot take shapes {options.shapes or options.ranges}: "
                                      f"{_first_line(e)}") from None

        def sized(infos, ports):
            # Dims OpenVINO now knows (fixed inputs propagate to outputs) become ints; the rest keep their names.
            out = []
            for t, port in zip(infos, ports):
                ps = port.get_partial_shape()
                if ps.rank.is_dynamic:
                    out.append(t)
                    continue
                names = t.shape if len(t.shape) == len(ps) else ("?",) * len(ps)
                dims = tuple(ps[k].get_length() if ps[k].is_static else d for k, d in enumerate(names))
                out.append(TensorInfo(t.name, dims, t.dtype))
            return out

        meta = {}
        if options.precision == "int8":
            ov_model = quantize_int8(ov_model, proto, options, model)
            meta = {"float_nodes": list(options.exclude), "calib_method": options.calib_method}
        with staged_dir(out_dir) as tmp:
            try:
                # int8's float layers store fp16 weights (computed in f32): fp16 weights leave top-1 and
                # cosine unchanged on the eval photos, and keep the IR within 0.3x of fp32's size
                ov.save_model(ov_model, str(tmp / XML_FILE), compress_to_fp16=(options.precision != "fp32"))
            except Exception as e:
                raise ConversionError(f"{model}: OpenVINO save_model failed: {_first_line(e)}") from None
            artifact = Artifact(
                backend=self.name,
                precision=options.precision,
                root=tmp,
                files=[XML_FILE, BIN_FILE],
                inputs=sized(inputs, in_ports),
                outputs=sized(outputs, out_ports),
                meta={"openvino": ov.get_version(), "tensor_names": renamed, "session": session, **meta},
            )
            artifact.save()
        artifact.root = out_dir
        return artifact

    def open(self, artifact: Artifact, threads: int | None = None) -> "OpenVINOSession":
        return OpenVINOSession(artifact, threads=threads)


# ---------------------------------------------------------------------------- session (device side)

def _shared_tensor(ov, a: np.ndarray):
    """An ov.Tensor over the array's own memory; only a non-contiguous array is copied (OpenVINO needs C order),
    or a read-only one (np.frombuffer of bytes, a memory-mapped file), which ov.Tensor refuses to share."""
    if not a.flags.c_contiguous or not a.flags.writeable:
        a = np.array(a, order="C")
    return ov.Tensor(a, shared_memory=True)


class OpenVINOSession:
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
        ov = self._ov = _ov()
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
            raise BundleError(f"{xml}: OpenVINO cannot load it: {_first_line(e)}") from None
        self.artifact = artifact
        self.inputs = list(artifact.inputs)
        self.outputs = list(artifact.outputs)
        ov_names = artifact.meta.get("tensor_names", {})  # ONNX name -> IR name where they differ
        try:
            self._in_idx = [_port_index(self._compiled.inputs, ov_names.get(t.name, t.name)) for t in self.inputs]
            self._out_idx = [_port_index(self._compiled.outputs, ov_names.get(t.name, t.name)) for t in self.outputs]
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
            raise ModelError(f"{self.artifact.root}: OpenVINO failed to run: {_first_line(e)}") from None
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
            raise ModelError(f"{self.artifact.root}: OpenVINO failed to run: {_first_line(e)}") from None
        return results

    def close(self) -> None:
        with self._lock:
            self._requests.clear()
        self._local = threading.local()
        self._compiled = None

    def __enter__(self) -> "OpenVINOSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
