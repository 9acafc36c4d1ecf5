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
