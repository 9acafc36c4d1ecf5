"""A small client for bundles served by Triton (`edgesdk serve`), on NVIDIA's tritonclient.

    from edgesdk.client import Client
    c = Client("127.0.0.1:8000")                 # HTTP; Client("127.0.0.1:8001", protocol="grpc") for gRPC
    r = c(frame_bgr_uint8)                       # like edgesdk.load(bundle)(frame): outputs + post-processing
    rs = c.infer_batch([frame1, frame2])         # same-size frames in one request
    outs = c.infer({"input": tensor})            # like Model.infer: the model's own tensors

Needs `pip install "tritonclient[http,grpc]"`. Outputs come back in the bundle's own shapes (the batch dim
Triton adds is taken off again), so results compare one to one with edgesdk.load on the same frames.
"""
from __future__ import annotations

import json

import numpy as np

from edgesdk.errors import BackendUnavailable, EdgeSDKError

FRAMES = "FRAMES"  # the names edgesdk/backends/triton/python_model.py serves
RESULT = "RESULT"


class Client:
    def __init__(self, url: str = "127.0.0.1:8000", model: str | None = None, protocol: str = "http",
                 timeout: float = 60.0):
        if protocol not in ("http", "grpc"):
            raise EdgeSDKError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        try:
            if protocol == "http":
                import tritonclient.http as tc
            else:
                import tritonclient.grpc as tc
        except ImportError as e:
            raise BackendUnavailable(f"the Triton client needs tritonclient[{protocol}]: {e} "
                                     "(pip install 'tritonclient[http,grpc]')") from None
        from tritonclient.utils import InferenceServerException

        self._tc, self._error, self.protocol = tc, InferenceServerException, protocol
        self.url = url.split("://", 1)[-1]
        self._timeout = timeout
        self._client = (tc.InferenceServerClient(self.url, network_timeout=timeout, connection_timeout=timeout)
                        if protocol == "http" else tc.InferenceServerClient(self.url))
        self._json = {"as_json": True} if protocol == "grpc" else {}  # gRPC answers protobuf messages otherwise
        self.model = model or self._only_model()
        config = self._call(self._client.get_model_config, self.model, **self._json)
        config = config.get("config", config)  # gRPC wraps it
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [i["name"] for i in config["input"] if i["name"] != FRAMES]
        self.outputs = [o["name"] for o in config["output"] if o["name"] != RESULT]

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._error as e:
            raise EdgeSDKError(f"Triton at {self.url}: {e.message() if hasattr(e, 'message') else e}") from None

    def _only_model(self) -> str:
        index = self._call(self._client.get_model_repository_index, **self._json)
        index = index.get("models", []) if isinstance(index, dict) else index
        names = sorted({m["name"] for m in index if m.get("state") == "READY"})
        if len(names) != 1:
            raise EdgeSDKError(f"Triton at {self.url} serves {names or 'no ready models'}; name one: Client(url, model=)")
        return names[0]

    def _input(self, name: str, array: np.ndarray):
        from tritonclient.utils import np_to_triton_dtype

        t = self._tc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(np.ascontiguousarray(array))
        return t

    def _infer(self, inputs: list) -> list[dict]:
        outputs = [self._tc.InferRequestedOutput(n) for n in self.outputs + [RESULT]]
        kwargs = {"client_timeout": self._timeout} if self.protocol == "grpc" else {}
        r = self._call(self._client.infer, self.model, inputs, outputs=outputs, **kwargs)
        arrays = {n: r.as_numpy(n) for n in self.outputs}
        results = r.as_numpy(RESULT).reshape(-1)
        items = []
        for i, post in enumerate(results):
            item = {n: (a[i:i + 1] if self.batched else a) for n, a in arrays.items()}
            item.update(json.loads(post))
            items.append(item)
        return items

    def __call__(self, frame: np.ndarray) -> dict:
        """One uint8 BGR HxWx3 frame, preprocessed by the server: the outputs and the post-processing."""
        return self.infer_batch([frame])[0]

    def infer_batch(self, frames: list[np.ndarray]) -> list[dict]:
        """Same-size frames in one request (a batched model), else one request each."""
        frames = [np.asarray(f) for f in frames]
        if self.batched and len({f.shape for f in frames}) == 1:
            return self._infer([self._input(FRAMES, np.stack(frames))])
        return [item for f in frames for item in self._infer([self._input(FRAMES, f[None] if self.batched else f)])]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict:
        """The model's own input tensors, in its own shapes: the outputs and the post-processing."""
        items = self._infer([self._input(n, np.asarray(a)) for n, a in feeds.items()])
        if len(items) == 1:
            return items[0]
        return {n: np.concatenate([it[n] for it in items]) for n in self.outputs}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
