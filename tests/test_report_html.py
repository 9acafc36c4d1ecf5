"""report.html opened in a real headless browser (Debian's chromium): a screenshot that is not blank and
the model's name on the page."""
import json
import shutil
import subprocess

import numpy as np
import pytest

import edgesdk

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args, timeout=120):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, effnet_onnx, calib_images):
    """An int8 bundle (the default budget: no [quantize])."""
    root = tmp_path_factory.mktemp("report")
    toml = root / "ov8.toml"
    toml.write_text('schema = 1\nname = "ov8"\nengine = "openvino"\nprecision = "int8"\narch = "x86_64"\n')
    return edgesdk.package(effnet_onnx, toml, root / "bundle", calib=calib_images[:30]).out


def test_report_html_self_contained(int8_bundle):
    page = (int8_bundle / "report.html").read_text()
    assert "efficientnet_lite0" in page and "<svg" in page and "data:image/png;base64," in page
    assert "src='http" not in page and "<script" not in page  # nothing fetched, nothing run
    assert "Parity against ONNX Runtime" in page and "p99" in page and "INT8 accuracy budget" in page
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    assert "report.html" in manifest["files"]  # hashed like the rest of the bundle
    if manifest["quantization"]["fallback"]:
        assert "Per-layer error" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_html_renders_in_headless_chromium(int8_bundle, tmp_path):
    from edgesdk.device.preprocess import read_image

    url = (int8_bundle / "report.html").resolve().as_uri()
    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>efficientnet_lite0" in dom.stdout and "<h1>efficientnet_lite0" in dom.stdout
    shot = tmp_path / "report.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1000,2400", url)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = read_image(shot).astype(np.float64)
    assert img.std() > 20, "the screenshot is blank"  # a white page has std 0
    # The calibration photo as the model sees it is on screen: the page's own PNG is found in the
    # screenshot pixel for pixel (it is shown at its natural size).
    import base64
    import re

    import cv2

    uri = re.search(r"src='data:image/png;base64,([^']+)'", (int8_bundle / "report.html").read_text()).group(1)
    photo = cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
    assert photo.std() > 20, "the embedded photo is blank"
    score = cv2.matchTemplate(img.astype(np.float32), photo, cv2.TM_CCOEFF_NORMED).max()
    assert score > 0.95, f"the model-input photo is not on the rendered page (best match {score:.3f})"


def test_budget_steps_show_method_and_barely_firing_samples(int8_bundle):
    """A step whose samples barely fire (a text detector's map on a photo without text) shows how many
    were held on max-abs and the cosine that counted, in report.md and report.html alike."""
    from edgesdk.build.budget import Budget, check_budget
    from edgesdk.build.report import report_md
    from edgesdk.build.report_html import report_html

    rng = np.random.default_rng(0)
    firing = rng.random((1, 1, 32, 32)).astype(np.float32)
    quiet = (rng.random((1, 1, 32, 32)) * 1e-3).astype(np.float32)
    refs = [{"map": firing}, {"map": quiet}]
    gots = [{"map": firing * 1.001}, {"map": rng.random((1, 1, 32, 32)).astype(np.float32) * 1e-3}]
    check = check_budget(refs, gots, Budget(min_cosine=0.99))
    assert check.passed and check.near_zero == 1 and check.judged_cosine_min > 0.999
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    manifest["quantization"]["steps"] = [{"float_nodes": [], "method": "minmax", "check": check.to_dict()}]
    md, page = report_md(manifest, None), report_html(manifest, None)
    assert "| minmax | 0 | " in md and "1 barely firing held by max-abs" in md and "judged by cosine (min 1.0000" in md
    assert "<td>minmax</td><td>0</td>" in page and "1 (max abs " in page and "judged cosine min 1.0000" in page
