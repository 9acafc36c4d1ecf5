"""RKNN session on the board (device side: numpy and rknn-toolkit-lite2 only): a .rknn model on the
Rockchip NPU through RKNNLite (rknnlite.api), which needs the NPU driver and librknnrt.so; aarch64 only.

The model was built with the profile's mean/std folded into the NPU's input stage, so it takes pixels,
not normalised tensors: `npu_inputs` turns the normalised feeds of the Session contract back into pixels
(exact up to float rounding: the feed was (pixel - mean) / std). Feeding the NPU uint8 frames straight
from the native resize, with no float image at all, is the next step (the runtime passes floats today).

Thread-safety: one RKNNLite context per worker; run() takes a free one, so several threads may call it.
On an RK3588 (three NPU cores) `threads=3` gives each context its own core (`Model.stream(workers=3)`);
one context follows the profile's core_mask.
"""
from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from edgesdk.backends.base import Artifact, Closable, check_feeds, check_threads
from edgesdk.errors import BackendUnavailable, BundleError, EdgeSDKError

RKNN_FILE = "model.rknn"
# [engine_options] core_mask -> RKNNLite's constant; only RK3588 (3 cores) and RK3576 (2) have a choice
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}
NPU_CORES = {"rk3588": 3, "rk3576": 2}


def npu_inputs(artifact: Artifact, feeds: dict) -> tuple[list[np.ndarray], list[str]]:
    """Feeds keyed by ONNX name -> the arrays and data formats the toolkit's inference() takes, in input order."""
    folded = artifact.meta.get("folded") or {}
    arrays, formats = [], []
    for t in artifact.inputs:
        a = feeds[t.name]
        f = folded.get(t.name)
        if f is None:
            arrays.append(np.ascontiguousarray(a))
            formats.append("nchw")
            continue
        axis = 1 if f["layout"] == "nchw" else 3
        view = [1] * a.ndim
        view[axis] = 3
        mean = np.asarray(f["mean"], np.float32).reshape(view)
        std = np.asarray(f["std"], np.float32).reshape(view)
        arrays.append(np.ascontiguousarray(a.astype(np.float32) * std + mean))
        formats.append(f["layout"])
    return arrays, formats


def shaped_outputs(artifact: Artifact, outs) -> dict[str, np.ndarray]:
    """The toolkit's output list -> ONNX names and shapes, float32 (it dequantizes int8 outputs)."""
    if outs is None or len(outs) != len(artifact.outputs):
        got = "nothing" if outs is None else f"{len(outs)} outputs"
        raise EdgeSDKError(f"{artifact.root}: the RKNN runtime returned {got}; the model has {len(artifact.outputs)}")
    result = {}
    for t, o in zip(artifact.outputs, outs):
        o = np.asarray(o, dtype=np.float32)
        if t.is_static and o.size == int(np.prod(t.shape)):
            o = o.reshape(t.shape)
        result[t.name] = o
    return result


def _rknnlite():
    try:
        from rknnlite.api import RKNNLite
    except ImportError:
        raise BackendUnavailable("rknn-toolkit-lite2 is not installed (an aarch64 wheel for the board, with "
                                 "Rockchip's NPU driver and librknnrt.so)") from None
    return RKNNLite


class RknnLiteSession(Closable):
    def __init__(self, artifact: Artifact | str | Path, threads: int | None = None, core_mask: str | None = None):
        check_threads(threads)
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact)
        if artifact.backend != "rknn":
            raise BundleError(f"{artifact.root}: artifact is for {artifact.backend!r}, not rknn")
        path = artifact.path(RKNN_FILE)
        if not path.is_file():
            raise BundleError(f"{path}: missing")
        RKNNLite = _rknnlite()
        self.artifact, self.inputs, self.outputs = artifact, artifact.inputs, artifact.outputs
        mask = core_mask or (artifact.meta.get("session") or {}).get("core_mask", "auto")
        if mask not in CORE_MASKS:
            raise EdgeSDKError(f"rknn core_mask {mask!r} is not one of {', '.join(CORE_MASKS)}")
        cores = NPU_CORES.get(artifact.meta.get("platform"), 1)
        n = threads or 1
        # several contexts on a multi-core NPU: one core each; otherwise the profile's mask for all
        masks = [str(k % cores) for k in range(n)] if n > 1 and cores > 1 else [mask] * n
        self._free: queue.Queue = queue.Queue()
        self._all = []
        try:
            for m in masks:
                ctx = RKNNLite(verbose=False)
                if ctx.load_rknn(str(path)) != 0:
                    raise BundleError(f"{path}: RKNNLite could not load it (built for {artifact.meta.get('platform')}?)")
                self._all.append(ctx)
                kwargs = {"core_mask": getattr(RKNNLite, CORE_MASKS[m])} if cores > 1 else {}
                if ctx.init_runtime(**kwargs) != 0:
                    raise BackendUnavailable(f"{path}: RKNNLite init_runtime failed (NPU driver loaded? core {m})")
                self._free.put(ctx)
        except BaseException:
            self.close()
            raise

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        check_feeds(self.inputs, feeds, str(self.artifact.root))
        arrays, formats = npu_inputs(self.artifact, feeds)
        ctx = self._free.get()
        try:
            outs = ctx.inference(inputs=arrays, data_format=formats)
        finally:
            self._free.put(ctx)
        return shaped_outputs(self.artifact, outs)

    def close(self) -> None:
        for ctx in getattr(self, "_all", []):
            ctx.release()
        self._all = []
