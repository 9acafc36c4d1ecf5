"""The shape of the package, read from the source: no import cycle among edgesdk's modules (imports
inside functions count), the device house never imports the build house, no module over 450 lines,
and a bundle of each engine loads and runs in a fresh interpreter without any build-side module."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "edgesdk"
MAX_LINES = 450
# Nothing of these may be loaded on a board: the build house, the converters and the build tools.
BUILD_SIDE = ("edgesdk.build", "onnx", "onnxslim", "nncf", "torch", "pnnx", "onnxruntime.quantization",
              "onnxruntime.transformers")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """edgesdk modules `name` imports anywhere in its source. `from pkg import x` counts x when it is a
    module, else pkg; a submodule import does not count its parent packages (Python runs their
    __init__ first, but an __init__ that imports nothing of its own submodules closes no cycle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                if f"{module}.{a.name}" in known:
                    found.add(f"{module}.{a.name}")
                elif module in known:
                    found.add(module)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_reader_sees_function_level_imports():
    # the reader itself: the lazy open() of a backend is an edge, so a cycle through it is found
    graph = _graph()
    assert "edgesdk.backends.ncnn.session" in graph["edgesdk.backends.ncnn"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_device_never_imports_build():
    graph = _graph()
    device = [m for m in graph if m.startswith("edgesdk.device")]
    bad = {m: sorted(n for n in graph[m] if n.startswith("edgesdk.build")) for m in device}
    assert not any(bad.values()), bad
    # sessions are device side: they import neither the build house nor their backend's converter
    sessions = [m for m in graph if m.startswith("edgesdk.backends.") and m.endswith(".session")]
    assert len(sessions) >= 4
    for m in sessions:
        assert not [n for n in graph[m] if n.startswith("edgesdk.build") or n.endswith((".convert", ".int8"))], m


def test_no_module_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_import_edgesdk_loads_no_house():
    code = ("import sys, edgesdk; print(json.dumps(sorted(m for m in sys.modules if m.startswith('edgesdk'))))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout) == ["edgesdk", "edgesdk._version", "edgesdk.errors"]


LOAD_AND_RUN = """
import json, sys
import numpy as np
import edgesdk
m = edgesdk.load(sys.argv[1], native={native})
out = m(np.full((240, 320, 3), 128, np.uint8))
assert out, "no outputs"
print(json.dumps({{"native": m.native, "modules": sorted(sys.modules)}}))
"""


def _fresh_load(bundle: Path, native: bool) -> dict:
    r = subprocess.run([sys.executable, "-c", LOAD_AND_RUN.format(native=native), str(bundle)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def engine_bundles(effnet_onnx, tmp_path_factory):
    """An EfficientNet-Lite0 bundle for each engine here: ncnn (rpi5), OpenVINO, ONNX Runtime."""
    from edgesdk.build.package import package

    out = tmp_path_factory.mktemp("bundles")
    return {target: package(effnet_onnx, target, out / target).out
            for target in ("rpi5", "x86-openvino", "x86-onnxruntime")}


@pytest.mark.slow
@pytest.mark.parametrize("target,native", [("rpi5", True), ("rpi5", False), ("x86-openvino", True),
                                           ("x86-openvino", False), ("x86-onnxruntime", False)])
def test_fresh_load_imports_no_build_side(engine_bundles, target, native):
    got = _fresh_load(engine_bundles[target], native)
    assert got["native"] is native
    bad = [m for m in got["modules"] if m in BUILD_SIDE or m.startswith(tuple(p + "." for p in BUILD_SIDE))]
    assert not bad, bad
    # nor any converter: a session import pulls in only its engine
    assert not [m for m in got["modules"] if m.startswith("edgesdk.backends.") and m.endswith((".convert", ".int8"))]
    engines = {"rpi5": "ncnn", "x86-openvino": "openvino", "x86-onnxruntime": "onnxruntime"}
    others = {"ncnn", "openvino", "onnxruntime"} - {engines[target]}
    assert not [m for m in got["modules"] if m.split(".")[0] in others], "another engine was imported"
