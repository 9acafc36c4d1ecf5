"""Bundles served by a real Triton Inference Server (tritonserver 2.51, python backend) on 127.0.0.1.

The server comes from tools/triton_env.sh; without it these tests skip saying so. The client side runs
edgesdk.client in a Python that has tritonclient[http,grpc] (this one, or the server environment's) through
tests/triton_client_job.py. Servers are started by edgesdk's Server and stopped (or killed) by their PID.
"""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk.backends.triton.serve import Server, find_server
from edgesdk.errors import BackendUnavailable, EdgeSDKError

REPO_ROOT = Path(__file__).resolve().parents[1]
JOB = Path(__file__).with_name("triton_client_job.py")

pytestmark = pytest.mark.slow


def _server_or_reason():
    try:
        return find_server(), None
    except BackendUnavailable as e:
        return None, str(e)


SERVER, NO_SERVER = _server_or_reason()
needs_server = pytest.mark.skipif(SERVER is None, reason=f"{NO_SERVER}")


def client_python() -> str:
    """A Python with tritonclient's HTTP and gRPC clients: this one, else the server environment's."""
    if all(importlib.util.find_spec(m) for m in ("geventhttpclient", "grpc", "tritonclient")):
        return sys.executable
    env_python = SERVER.parent / "python"
    if env_python.is_file():
        return str(env_python)
    pytest.skip("no Python with tritonclient[http,grpc] (pip install 'tritonclient[http,grpc]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(tmp: Path, kind: str, server: Server, data: dict, timeout=600, **extra) -> dict:
    np.savez(tmp / f"{kind}-data.npz", **data)
    job = {"kind": kind, "data": str(tmp / f"{kind}-data.npz"), "out": str(tmp / f"{kind}-out.npz"),
           "urls": {"http": f"127.0.0.1:{server.http_port}", "grpc": server.grpc_url}, **extra}
    (tmp / f"{kind}.json").write_text(json.dumps(job))
    r = subprocess.run([client_python(), str(JOB), str(tmp / f"{kind}.json")], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "PYTHONNOUSERSITE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def frames(eval_images):
    """Real photos of different sizes, uint8 BGR."""
    from edgesdk.device.preprocess import read_image

    return [read_image(p) for p in eval_images[:4]]


_REPOS: dict[str, Path] = {}


def _repo(engine, tmp_path_factory, effnet_onnx, calib_dir) -> Path:
    """An EfficientNet-Lite0 model repository (triton-cpu) with `engine` inside, built once per run."""
    if engine not in _REPOS:
        from edgesdk.build.targets import TARGETS_DIR

        tmp = tmp_path_factory.mktemp(f"triton-{engine}")
        profile = (TARGETS_DIR / "triton-cpu.toml").read_text()
        if engine != "openvino":
            profile = profile.replace('bundle_engine = "openvino"', f'bundle_engine = "{engine}"')
            profile = "\n".join(line for line in profile.splitlines() if not line.startswith("hint"))
        (tmp / "profile.toml").write_text(profile)
        result = edgesdk.package(effnet_onnx, tmp / "profile.toml", tmp / "repo", calib=calib_dir)
        assert result.manifest["backend"] == engine
        _REPOS[engine] = tmp / "repo"
    return _REPOS[engine]


@pytest.fixture(scope="module", params=["openvino", "ncnn"])
def repo(request, tmp_path_factory, effnet_onnx, calib_dir):
    return _repo(request.param, tmp_path_factory, effnet_onnx, calib_dir)


@pytest.fixture(scope="module")
def ov_repo(tmp_path_factory, effnet_onnx, calib_dir):
    """The OpenVINO repository, for the tests that need one server's behaviour, not each engine's."""
    return _repo("openvino", tmp_path_factory, effnet_onnx, calib_dir)


def bundle_of(repo: Path) -> Path:
    (bundle,) = repo.glob("*/1/bundle")
    return bundle


def _serving(repo: Path, log_name: str):
    """A tritonserver on `repo` for the fixture's lifetime, its log beside the repository."""
    with open(repo.parent / log_name, "w") as log:
        srv = Server(repo, free_port(), free_port(), log=log).start()
        yield srv
        srv.stop()


@pytest.fixture(scope="module")
def ov_server(ov_repo):
    yield from _serving(ov_repo, "ov-server.log")


@pytest.fixture(scope="module")
def server(repo):
    yield from _serving(repo, "server.log")


@needs_server
def test_served_outputs_equal_edgesdk_load_over_http_and_grpc(server, repo, frames, tmp_path):
    model = edgesdk.load(bundle_of(repo))
    name_in, name_out = model.inputs[0].name, model.outputs[0].name
    tensors = [model.prepare(f)[name_in] for f in frames]
    got = run_job(tmp_path, "parity", server, {**{f"frame{i}": f for i, f in enumerate(frames)},
                                                **{f"tensor{i}": t for i, t in enumerate(tensors)}},
                  input=name_in, output=name_out)
    arrays = np.load(tmp_path / "parity-out.npz")
    for proto in ("http", "grpc"):
        for kind, items in (("frame", [model(f) for f in frames]), ("tensor", [model.infer({name_in: t}) for t in tensors])):
            for i, want in enumerate(items):
                key = f"{proto}_{kind}_{i}"
                have = arrays[key]
                assert have.shape == want[name_out].shape, key
                assert cosine(have, want[name_out]) >= 0.9999, key
                assert got["top1"][key] == int(np.argmax(want[name_out])), key
    model.close()


@needs_server
def test_eight_clients_two_hundred_requests_each_without_errors(ov_server, ov_repo, frames, tmp_path):
    got = run_job(tmp_path, "load", ov_server, {f"frame{i}": f for i, f in enumerate(frames)}, clients=8, requests=200)
    assert got["error_count"] == 0, got["errors"]
    assert got["ok"] == 8 * 200


@needs_server
def test_bad_requests_name_the_input_and_the_server_keeps_serving(server, repo, frames, tmp_path):
    model = edgesdk.load(bundle_of(repo))
    name_in = model.inputs[0].name
    got = run_job(tmp_path, "faults", server, {"frame0": frames[0], "tensor0": model.prepare(frames[0])[name_in]},
                  input=name_in)
    assert f"'{name_in}'" in got["shape"] and "shape" in got["shape"]
    assert f"'{name_in}'" in got["dtype"] and "FP64" in got["dtype"]
    assert "'FRAMES'" in got["frame_dtype"] and "UINT8" in got["frame_dtype"]
    assert "either FRAMES" in got["both"]
    assert got["after"] == int(np.argmax(model(frames[0])[model.outputs[0].name]))
    model.close()


@needs_server
def test_server_killed_mid_load_and_restarted_loads_the_repository_again(ov_repo, frames, tmp_path):
    log = (tmp_path / "server.log").open("w")
    srv = Server(ov_repo, free_port(), free_port(), log=log).start()
    np.savez(tmp_path / "load-data.npz", frame0=frames[0])
    job = {"kind": "load", "data": str(tmp_path / "load-data.npz"), "out": "", "clients": 4, "requests": 10_000,
           "urls": {"http": f"127.0.0.1:{srv.http_port}", "grpc": srv.grpc_url}}
    (tmp_path / "load.json").write_text(json.dumps(job))
    clients = subprocess.Popen([client_python(), str(JOB), str(tmp_path / "load.json")], stdout=subprocess.PIPE,
                               text=True)
    try:
        time.sleep(3)  # requests in flight
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(30)
        assert srv.proc.returncode == -signal.SIGKILL
        out, _ = clients.communicate(timeout=300)
    finally:
        clients.kill()
        clients.wait()
        clients.stdout.close()
        srv.stop()
        log.close()
    got = json.loads(out.strip().splitlines()[-1])
    assert got["ok"] > 0 and got["error_count"] > 0  # served until killed, then refused

    with (tmp_path / "server2.log").open("w") as log, Server(ov_repo, srv.http_port, srv.grpc_port, log=log) as again:
        assert set(again.model_states().values()) == {"READY"}
        got = run_job(tmp_path, "faults", again, {"frame0": frames[0], "tensor0": np.zeros((1, 3, 224, 224),
                                                                                            np.float32)},
                      input="images")
        assert got["after"] >= 0


@needs_server
def test_a_tampered_bundle_fails_to_load_with_the_hash_error_in_the_log(ov_repo, tmp_path):
    tampered = tmp_path / "ov_repo"
    shutil.copytree(ov_repo, tampered)
    target = next(p for p in sorted((bundle_of(tampered) / "model").iterdir()) if p.suffix == ".bin")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log, pytest.raises(EdgeSDKError, match="exited with code"):
        Server(tampered, free_port(), free_port(), log=log).start()
    log = log_path.read_text()
    assert f"file model/{target.name} does not match its sha256 in the manifest" in log


@needs_server
def test_serve_cli_prints_endpoints_and_stops_on_sigint(ov_repo, tmp_path):
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgesdk", "serve", str(ov_repo), "--http-port", str(http),
                             "--grpc-port", str(grpc)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("model "):
                break
        pid = int(lines[0].split("(pid ")[1].split(")")[0])
        assert f"http://127.0.0.1:{http}" in "".join(lines) and f"127.0.0.1:{grpc}" in "".join(lines)
        assert "READY" in lines[-1]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0
    assert "stopped tritonserver (exit code 0)" in rest
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_serve_without_a_server_exits_2_naming_the_install_command(tmp_path):
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text('name: "m"\n')
    env = {**os.environ, "EDGESDK_CACHE": str(tmp_path / "cache"), "PATH": os.path.dirname(sys.executable)}
    env.pop("EDGESDK_TRITONSERVER", None)
    r = subprocess.run([sys.executable, "-m", "edgesdk", "serve", str(tmp_path / "repo")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2
    assert "tools/triton_env.sh" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("backend", ["triton", "tensorrt"])
def test_convert_writes_the_artifact_without_the_engine(backend, effnet_onnx, tmp_path):
    """The engine runs an artifact; writing one on a build machine needs only the converter."""
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: convert validates the engine (tests/test_backend_tensorrt.py)")
    r = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(effnet_onnx), "--backend", backend,
                        "--out", str(tmp_path / "out"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["passed"] is None and "not validated here" in got["notes"][0]
    assert all((tmp_path / "out" / f).is_file() for f in got["files"])


@needs_server
@pytest.mark.parametrize("triton_backend, precision", [("onnxruntime", "fp32"), ("openvino", "fp32"),
                                                       ("tensorrt", "fp16")])
def test_native_repositories_pass_the_servers_config_parsing(triton_backend, precision, effnet_onnx, tmp_path):
    """This server has the python backend only: a native repository must get as far as looking for its
    backend library, which it reaches only after parsing config.pbtxt (a config error stops earlier)."""
    from edgesdk.backends.base import ConvertOptions
    from edgesdk.backends.triton import TritonBackend

    art = TritonBackend().convert(effnet_onnx, tmp_path / "repo", ConvertOptions(
        precision=precision, engine={"model_name": "effnet", "triton_backend": triton_backend}))
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log, pytest.raises(EdgeSDKError, match="exited with code"):
        Server(art.root, free_port(), free_port(), log=log).start()
    log = log_path.read_text()
    assert "Error parsing text-format" not in log and "failed to read text proto" not in log, log[-3000:]
    assert f"unable to find backend library for backend '{triton_backend}'" in log, log[-3000:]
