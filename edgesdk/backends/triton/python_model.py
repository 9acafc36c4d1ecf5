"""An edgesdk bundle served by Triton's python backend (device side: numpy, the native module and the
bundle's engine, as edgesdk.load itself).

The repository's `<model>/1/model.py` imports TritonPythonModel from here; the bundle lies beside it in
`<model>/1/bundle/` and is loaded (and its sha256s checked) in initialize, so a tampered bundle fails the
model's load with the bundle's own error in the server log. A request carries one of two inputs:
  FRAMES            uint8 BGR frames [batch, H, W, 3], preprocessed here by the bundle's spec (native kernels)
  <model input>     the model's own input tensor(s), ready made, under their names
and gets back the model's output tensors under their names plus RESULT: the post-processing result of each
item as JSON (BYTES, [batch, 1]); for tensor requests boxes are in model-input pixels (there is no frame).
The requests of one execute() (a dynamic batch) run together: frames through Model.stream with `workers`
in flight on the native engine, tensors one item at a time (each run uses the bundle's threads).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton's python backend: readable (and its helpers testable), not servable
    pb_utils = None

FRAMES = "FRAMES"
RESULT = "RESULT"
BUNDLE_DIR = "bundle"


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def result_json(post: dict) -> bytes:
    return json.dumps(post, default=_jsonable).encode()


def split_items(array: np.ndarray, batched: bool) -> list[np.ndarray]:
    """A request's tensor as the model's own items: [b, ...] -> b arrays [1, ...] when Triton batches."""
    return [array[i:i + 1] for i in range(array.shape[0])] if batched else [array]


def join_items(items: list[np.ndarray], batched: bool) -> np.ndarray:
    return np.concatenate(items, axis=0) if batched else items[0]


class TritonPythonModel:
    def initialize(self, args):
        from edgesdk.device.runtime import load

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        root = Path(args["model_repository"]) / args["model_version"] / BUNDLE_DIR
        threads = int(params.get("threads") or 0) or None
        self.model = load(root, threads=threads)
        instances = sum(int(g.get("count", 1)) for g in config.get("instance_group") or [{}]) or 1
        self.workers = int(params.get("workers") or 0) or max(1, (os.cpu_count() or 1) // instances)
        self.input_names = [t.name for t in self.model.inputs]
        self.output_names = [t.name for t in self.model.outputs]
        spec = self.model.spec
        self.input_hw = (spec.size[1], spec.size[0]) if spec is not None else None

    def _read(self, request):
        """('frames', [frame, ...]) or ('tensors', [feeds, ...]) for one request; EdgeSDKError names the problem."""
        from edgesdk.errors import EdgeSDKError

        frames = pb_utils.get_input_tensor_by_name(request, FRAMES)
        tensors = {n: pb_utils.get_input_tensor_by_name(request, n) for n in self.input_names}
        given = [n for n, t in tensors.items() if t is not None]
        if (frames is None) == (not given):
            raise EdgeSDKError(f"a request carries either {FRAMES} (uint8 BGR [batch, H, W, 3]) or the model's "
                               f"input(s) {self.input_names}, not {'both' if given else 'neither'}")
        if frames is not None:
            if self.model.spec is None:
                raise EdgeSDKError(f"{FRAMES}: this bundle has no preprocessing spec; send {self.input_names}")
            array = frames.as_numpy()
            return "frames", list(array) if self.batched else [array]
        if len(given) != len(self.input_names):
            raise EdgeSDKError(f"inputs {self.input_names} go together; missing "
                               f"{[n for n in self.input_names if n not in given]}")
        arrays = {n: t.as_numpy() for n, t in tensors.items()}
        count = len(split_items(arrays[self.input_names[0]], self.batched))
        return "tensors", [{n: split_items(a, self.batched)[i] for n, a in arrays.items()} for i in range(count)]

    def _response(self, results: list[dict]):
        tensors = [pb_utils.Tensor(n, join_items([r[n] for r in results], self.batched)) for n in self.output_names]
        posts = [result_json({k: v for k, v in r.items() if k not in self.output_names}) for r in results]
        shape = (len(posts), 1) if self.batched else (1,)
        tensors.append(pb_utils.Tensor(RESULT, np.array(posts, dtype=np.object_).reshape(shape)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests):
        from edgesdk.errors import EdgeSDKError

        responses = [None] * len(requests)
        jobs = []  # (request index, kind, items)
        for i, request in enumerate(requests):
            try:
                jobs.append((i, *self._read(request)))
            except EdgeSDKError as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        frame_jobs = [j for j in jobs if j[1] == "frames"]
        if frame_jobs:  # every frame of the batch in flight together, results back in order
            frames = [f for _, _, items in frame_jobs for f in items]
            try:
                results = list(self.model.stream(frames, workers=min(self.workers, len(frames))))
            except EdgeSDKError as e:
                results = e
            at = 0
            for i, _, items in frame_jobs:
                if isinstance(results, Exception):
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(results)))
                else:
                    responses[i] = self._response(results[at:at + len(items)])
                at += len(items)
        for i, kind, items in jobs:
            if kind != "tensors":
                continue
            try:
                outs = [self.model.infer(feeds) for feeds in items]
                responses[i] = self._response([{**o, **self.model.postprocess(o, self.input_hw or (1, 1))}
                                               for o in outs])
            except EdgeSDKError as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        return responses

    def finalize(self):
        self.model.close()
