"""ONNX -> .rknn for a Rockchip NPU (build side). rknn-toolkit2 pins numpy<=1.26.4, onnx<=1.18 and
protobuf<=4.25.4 and imports torch, so it lives in its own environment (tools/rknn_env.sh) and this
module drives worker.py there over a subprocess: one JSON line per request and reply, tensors as .npy
files. rknn is never imported into this process.

The preprocessing's mean/std are folded into the NPU's input stage (the board feeds pixels), so what
crosses to the worker are pixels: normalised feeds are turned back with session.npu_inputs.

The toolkit simulates only a model it has just built, never a .rknn read from disk, so the worker stays
up after a build with that model in its x86 simulator: `SimulatorSession` runs feeds there. One worker
at a time per process (the last build); a new build replaces it, exit closes it.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from edgesdk.backends.base import Artifact, Closable, ConvertOptions, TensorInfo, check_engine_options, check_feeds
from edgesdk.backends.rknn.env import PLATFORMS, rknn_python
from edgesdk.backends.rknn.session import RKNN_FILE, npu_inputs, shaped_outputs
from edgesdk.errors import BackendUnavailable, ConversionError, EdgeSDKError, ModelError

WORKER = Path(__file__).with_name("worker.py")
ENGINE_OPTIONS = {"platform": str, "core_mask": str}


class Worker:
    """The worker process in the rknn environment; its stderr (the toolkit's log) goes to a file."""

    def __init__(self):
        python = rknn_python()
        if python is None:
            from edgesdk.backends.rknn.env import MISSING

            raise BackendUnavailable(MISSING)
        self.dir = Path(tempfile.mkdtemp(prefix="edgesdk-rknn-"))
        self.log_path = self.dir / "worker.log"
        self._log = open(self.log_path, "wb")
        self._lock = threading.Lock()
        self._count = 0
        self.key: str | None = None  # sha256 of the .rknn the simulator holds
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.proc = subprocess.Popen([str(python), str(WORKER), str(self.dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, env=env, text=True)

    def request(self, op: str, **req) -> dict:
        with self._lock:
            self._log.flush()
            start = self.log_path.stat().st_size
            if self.proc.poll() is not None:
                raise ConversionError(f"the rknn worker exited ({self.proc.returncode}): {self.log_tail()}")
            self.proc.stdin.write(json.dumps({"op": op, **req}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise ConversionError(f"the rknn worker died during {op}: {self.log_tail()}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            said = self.errors_since(start)
            raise ConversionError(f"rknn {op}: {reply['error']}" + (f"; the toolkit said: {said}" if said else ""))
        return reply

    def log_size(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        """The toolkit's log written after `offset`, colour codes stripped."""
        import re

        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode(errors="replace"))

    def errors_since(self, offset: int) -> str:
        """The toolkit's own error lines ('E ...') logged after `offset`."""
        lines = [ln[2:].strip() for ln in self.log_since(offset).splitlines()
                 if ln.startswith("E ") and "Unkown op target" not in ln]
        return " | ".join(dict.fromkeys(lines[-3:]))

    def scratch(self) -> Path:
        """A fresh folder for one request's .npy files."""
        self._count += 1
        d = self.dir / f"io{self._count}"
        d.mkdir()
        return d

    def log_tail(self, lines: int = 8) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no log)"

    def close(self) -> None:
        import shutil

        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._log):
            stream.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_live: Worker | None = None
_analysis: tuple[str, str] | None = None  # (sha256 of the ONNX, accuracy_analysis table) of the last ranking
ANALYSIS_FILE = "accuracy_analysis.txt"


def _close_live() -> None:
    global _live
    if _live is not None:
        _live.close()
        _live = None


atexit.register(_close_live)


def _file_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_inputs(worker: Worker, arrays: list[np.ndarray]) -> list[str]:
    d = worker.scratch()
    paths = []
    for k, a in enumerate(arrays):
        p = d / f"in{k}.npy"
        np.save(p, a)
        paths.append(str(p))
    return paths


def engine_settings(engine: dict) -> dict:
    check_engine_options("rknn", engine, ENGINE_OPTIONS)
    from edgesdk.backends.rknn.session import CORE_MASKS

    platform = engine.get("platform", "rk3588")
    if platform not in PLATFORMS:
        raise ConversionError(f"rknn backend: platform {platform!r} is not one of {', '.join(PLATFORMS)}")
    mask = engine.get("core_mask", "auto")
    if mask not in CORE_MASKS:
        raise ConversionError(f"rknn backend: core_mask {mask!r} is not one of {', '.join(CORE_MASKS)}")
    return {"platform": platform, "core_mask": mask}


def _folded(inputs: list[TensorInfo], spec) -> dict:
    """Input name -> the mean/std/layout the NPU applies: the image input the preprocessing feeds."""
    if spec is None:
        return {}
    image = [t for t in inputs if len(t.shape) == 4 and t.dtype.startswith("float")
             and t.shape[1 if spec.layout == "nchw" else 3] == 3]
    if len(image) != 1:
        return {}
    return {image[0].name: {"mean": list(spec.mean), "std": list(spec.std), "layout": spec.layout}}


def convert(model: Path, out_dir: Path, options: ConvertOptions | None = None) -> Artifact:
    """ONNX (already optimized, shapes fixed by the profile) -> model.rknn for `[engine_options] platform`.
    int8: w8a8, per-channel weights, calibrated on `options.calibration` with the toolkit's algorithm for
    `options.calib_method`; ONNX nodes in `options.exclude` stay float16 (hybrid quantization). fp16: no
    quantization. The built model stays in the worker's simulator for SimulatorSession."""
    global _live
    from edgesdk.atomic import staged_dir
    from edgesdk.build.model import fix_input_shapes, graph_inputs, io_dicts, load_model

    options = options or ConvertOptions()
    if options.precision not in ("fp16", "int8"):
        raise ConversionError(f"rknn backend: precision {options.precision!r}: the NPU computes int8 or fp16")
    model, out_dir = Path(model), Path(out_dir)
    settings = engine_settings(options.engine)
    proto = load_model(model)
    if options.shapes:
        fix_input_shapes(proto, options.shapes, source=model)
    inputs = [TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(proto))]
    inputs = [TensorInfo(t.name, tuple(options.shapes.get(t.name, t.shape)), t.dtype) for t in inputs]
    dynamic = [t for t in inputs if not t.is_static]
    if dynamic:
        raise ModelError(f"{model}: the NPU needs fixed input shapes; {dynamic[0].name!r} is {list(dynamic[0].shape)}"
                         f" (give [inputs.{dynamic[0].name}] shape in the profile or --shape)")
    outputs = [TensorInfo.from_dict(d) for d in io_dicts(proto.graph.output)]
    folded = _folded(inputs, getattr(options, "preprocess", None))
    if options.precision == "int8" and not options.calibration:
        raise ConversionError(f"{model}: int8 needs calibration feeds (images through the target's preprocessing)")

    _close_live()  # one toolkit at a time: ~1 GB each
    worker = Worker()
    _live = worker
    meta_art = Artifact("rknn", options.precision, out_dir, [RKNN_FILE], inputs, outputs, {"folded": folded})
    req = {"platform": settings["platform"], "precision": options.precision,
           "inputs": [t.name for t in inputs], "shapes": [list(t.shape) for t in inputs],
           "method": options.calib_method, "float_nodes": list(options.exclude)}
    if folded:
        f = next(iter(folded.values()))
        req.update(mean=[f["mean"]], std=[f["std"]])
    if options.precision == "int8":
        for t in inputs:
            for feed in options.calibration:
                if t.name not in feed:
                    raise ConversionError(f"calibration feeds have {sorted(feed)}; the model input is {t.name!r}")
        req["dataset"] = [_save_inputs(worker, npu_inputs(meta_art, feed)[0]) for feed in options.calibration]

    with staged_dir(out_dir) as tmp:
        # the toolkit writes the file; a model path inside the stage keeps the write atomic
        req.update(onnx=str(model), out=str(tmp / RKNN_FILE))
        built = worker.request("build", **req)
        worker.key = _file_key(tmp / RKNN_FILE)
        meta = {"rknn": built["toolkit"], "platform": settings["platform"], "folded": folded,
                "session": {"core_mask": settings["core_mask"]}, "build_seconds": built["seconds"]}
        if options.precision == "int8":
            meta.update(calib_method=options.calib_method, float_nodes=list(options.exclude),
                        float_tensors=built["float_pairs"])
        files = [RKNN_FILE]
        if options.precision == "int8" and _analysis is not None and _analysis[0] == _file_key(model):
            (tmp / ANALYSIS_FILE).write_text(_analysis[1])  # what ranked the float layers, per layer
            files.append(ANALYSIS_FILE)
        artifact = Artifact("rknn", options.precision, tmp, files, inputs, outputs, meta)
        artifact.save()
    artifact.root = out_dir
    return artifact


def live_worker(artifact: Artifact) -> Worker | None:
    """The worker whose simulator holds this artifact's .rknn, if it is the one built last."""
    path = artifact.path(RKNN_FILE)
    if _live is None or _live.key is None or not path.is_file():
        return None
    return _live if _file_key(path) == _live.key else None


class SimulatorSession(Closable):
    """The artifact's model in rknn-toolkit2's x86 simulator, in the worker that just built it. Not the
    NPU: it checks the quantized graph's numerics on the build machine; the board runs RknnLiteSession."""

    engine_label = "rknn simulator (x86)"

    def __init__(self, artifact: Artifact, threads: int | None = None):
        self.artifact, self.inputs, self.outputs = artifact, artifact.inputs, artifact.outputs
        self.worker = live_worker(artifact)
        if self.worker is None:
            raise BackendUnavailable(
                f"{artifact.root}: rknn-toolkit2 simulates only the model it has just built, not a .rknn read "
                "from disk; on the board rknn-toolkit-lite2 runs it (Model.check() replays the golden samples)")

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        check_feeds(self.inputs, feeds, str(self.artifact.root))
        arrays, formats = npu_inputs(self.artifact, feeds)
        paths = _save_inputs(self.worker, arrays)
        out_dir = Path(paths[0]).parent
        try:
            reply = self.worker.request("run", inputs=paths, formats=formats, out_dir=str(out_dir))
            outs = [np.load(p) for p in reply["outputs"]]
        finally:
            for p in out_dir.iterdir():
                p.unlink()
            out_dir.rmdir()
        return shaped_outputs(self.artifact, outs)

    def close(self) -> None:
        pass  # the worker outlives the session: the next build or exit closes it


def layer_sensitivity(model: Path, artifact: Artifact, samples: list[dict]) -> list[tuple[str, float]]:
    """The toolkit's accuracy_analysis of the just-built int8 model on `samples`: (ONNX node, 1 - its
    single-layer cosine, averaged), worst first. A Conv fused with its activation is scored under the
    activation, which keeping float widens to the Conv (worker.float_pairs). The per-layer table of the
    first sample is kept (ANALYSIS_FILE in the next build of this model); the tensor dumps are not."""
    global _analysis
    from edgesdk.build.model import load_model

    worker = live_worker(artifact)
    if worker is None:
        raise EdgeSDKError(f"{artifact.root}: accuracy analysis needs the worker that built this model")
    producer = {o: n.name for n in load_model(model).graph.node for o in n.output}
    scores: dict[str, list[float]] = {}
    for k, feed in enumerate(samples):
        reply = worker.request("analyse", inputs=_save_inputs(worker, npu_inputs(artifact, feed)[0]))
        if k == 0:
            _analysis = (_file_key(Path(model)), reply["table"])
        for row in reply["rows"]:
            if row["tensor"] in producer and row["op"] not in ("Input", "exDataConvert"):
                scores.setdefault(producer[row["tensor"]], []).append(1.0 - row["single_cos"])
    return sorted(((n, float(np.mean(v))) for n, v in scores.items()), key=lambda s: -s[1])
