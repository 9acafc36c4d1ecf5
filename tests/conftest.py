"""Shared fixtures: the real test models, labels and photos built (once, cached) by tools.models."""
import sys
from pathlib import Path

import pytest

# tools/ is a top-level folder of the repo, not part of the installed package.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools import models  # noqa: E402


@pytest.fixture(scope="session")
def effnet_onnx() -> Path:
    return models.efficientnet_lite0()


@pytest.fixture(scope="session")
def effnet_preprocess() -> dict:
    """PreprocessSpec fields for EfficientNet-Lite0 (a copy: tests may change it)."""
    return dict(models.EFFICIENTNET_PREPROCESS)


@pytest.fixture(scope="session")
def imagenet_labels() -> list[str]:
    return models.imagenet_labels()


@pytest.fixture(scope="session")
def ppocr_det_onnx() -> Path:
    return models.ppocr_det()


@pytest.fixture(scope="session")
def ppocr_rec_onnx() -> Path:
    return models.ppocr_rec()


@pytest.fixture(scope="session")
def ppocr_keys() -> list[str]:
    return models.ppocr_keys()


@pytest.fixture(scope="session")
def real_images() -> dict:
    """name -> Path of every real photo (an ImageSet: ``.notes`` lists missing sources)."""
    return models.images()


@pytest.fixture(scope="session")
def calib_images() -> list[Path]:
    return models.calibration_images()


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory, calib_images) -> Path:
    """A folder holding only the calibration photos (symlinks), as `--calib DIR` takes them."""
    folder = tmp_path_factory.mktemp("calib")
    for p in calib_images:
        (folder / p.name).symlink_to(p)
    return folder


@pytest.fixture(scope="session")
def eval_images() -> list[Path]:
    return models.eval_images()


@pytest.fixture(scope="session")
def text_image() -> Path:
    return models.text_image()


@pytest.fixture(scope="session")
def reads_the_page():
    """Checks OCR text of text_image (skimage's page(): a scanned page of scikit-image's segmentation
    tutorial): its heading word for word and most of its paragraph's words."""
    def check(text: str) -> None:
        assert "Region-based segmentation" in text, text
        words = set(text.lower().replace(".", " ").replace(",", " ").split())
        assert len(words & {"markers", "coins", "background", "pixels", "label", "object", "histogram",
                            "determine", "unambiguously", "first"}) >= 7, text

    return check


@pytest.fixture(scope="session")
def linear_relu_onnx() -> Path:
    return models.linear_relu()


@pytest.fixture(scope="session")
def sklearn_onnx() -> Path:
    return models.sklearn_iris()


@pytest.fixture(scope="session")
def two_transpose_onnx() -> Path:
    return models.two_transpose()


@pytest.fixture(scope="session")
def srcnn_onnx() -> Path:
    return models.srcnn_factor()


@pytest.fixture(scope="session")
def yolo_ultralytics_onnx() -> Path:
    return models.yolo_ultralytics()


@pytest.fixture(scope="session")
def effnet_dynamic_onnx() -> Path:
    return models.efficientnet_lite0_dynamic()
