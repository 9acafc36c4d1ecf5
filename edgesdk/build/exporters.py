"""What a model's exporter wrote into it: pre/post-processing, class names and input size.

Three dialects of ONNX metadata_props are read:

- ours: ``edgesdk.preprocess`` / ``edgesdk.postprocess`` / ``edgesdk.labels``, JSON values;
- Ultralytics (``model.export(format="onnx")``): every value is ``str()`` of a Python object, so
  ``names`` reads ``{0: 'person', 1: 'bicycle'}`` and ``imgsz`` ``[320, 320]`` (height, width); parsed
  with ``ast.literal_eval``, never eval. ``task`` says what the head is;
- PaddleOCR / RapidOCR (paddle2onnx): the rec model's dictionary in ``character``, one per line; the
  class list is CTC's blank first, the dictionary, a space last (``use_space_char``). Their dims are
  named ``p2o.DynamicDimension.N``, which marks a Paddle export even when it carries no keys (det, cls).

`read_exporter(proto)` returns what the model says; `package` fills only what the profile leaves
open and records one line per field naming where it came from.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field

from edgesdk.errors import EdgeSDKError

META_PREPROCESS, META_POSTPROCESS, META_LABELS = "edgesdk.preprocess", "edgesdk.postprocess", "edgesdk.labels"

# Ultralytics: letterbox to imgsz with grey 114 padding, RGB, pixels / 255 (ultralytics LetterBox + predictor)
ULTRALYTICS_PREPROCESS = {"resize": "letterbox", "pad": 114, "color": "rgb", "mean": [0.0, 0.0, 0.0],
                          "std": [255.0, 255.0, 255.0]}
# Tasks whose heads device/postprocess decodes; the others are named in the refusal.
ULTRALYTICS_DECODED = ("detect", "classify")
ULTRALYTICS_TASKS = ("detect", "classify", "segment", "pose", "obb")
# PaddleOCR rec and cls: BGR as cv2 reads it, (pixel / 255 - 0.5) / 0.5; rec lines 48 high padded to 320
# (rec_image_shape "3,48,320"), cls 3,48,192 with labels '0' and '180' (cls_image_shape, label_list).
PADDLE_REC_SIZE, PADDLE_CLS_SIZE = (320, 48), (192, 48)
PADDLE_PREPROCESS = {"resize": "stretch", "color": "bgr", "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]}
PADDLE_CLS_LABELS = ["0", "180"]


@dataclass
class ExporterInfo:
    """What the model's metadata settles. Each filled field has a line in `sources`."""

    exporter: str | None = None  # "edgesdk", "ultralytics", "paddle"
    preprocess: dict | None = None  # PreprocessSpec fields (size as width, height)
    postprocess: dict | None = None
    labels: list[str] | None = None
    sources: dict[str, str] = field(default_factory=dict)  # field -> where it came from
    refused: str | None = None  # a head we cannot decode, named; raised only when the profile leaves it open


def _props(proto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _literal(key: str, value: str):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise EdgeSDKError(f"model metadata {key!r} is not a Python literal as Ultralytics writes it: "
                           f"{value[:80]!r}") from None


def _dims(t) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.type.tensor_type.shape.dim]


def _graph_inputs(proto) -> list:
    init = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in init]


def read_exporter(proto) -> ExporterInfo:
    """The first dialect the model speaks, ours first (a model we wrote keys into says exactly)."""
    props = _props(proto)
    if any(k in props for k in (META_PREPROCESS, META_POSTPROCESS, META_LABELS)):
        return _edgesdk(props)
    if "names" in props and ("task" in props or "imgsz" in props or props.get("author") == "Ultralytics"):
        return _ultralytics(proto, props)
    if "character" in props or any(isinstance(d, str) and d.startswith("p2o.") for t in _graph_inputs(proto)
                                   for d in _dims(t)):
        return _paddle(proto, props)
    return ExporterInfo()


def _edgesdk(props: dict) -> ExporterInfo:
    info = ExporterInfo("edgesdk")
    for key, attr in ((META_PREPROCESS, "preprocess"), (META_POSTPROCESS, "postprocess"), (META_LABELS, "labels")):
        if key in props:
            try:
                setattr(info, attr, json.loads(props[key]))
            except ValueError:
                raise EdgeSDKError(f"model metadata {key!r} is not valid JSON") from None
            info.sources[attr] = f"model metadata {key}"
    return info


def _ultralytics(proto, props: dict) -> ExporterInfo:
    info = ExporterInfo("ultralytics")
    task = props.get("task", "detect")
    names = _literal("names", props["names"])
    if isinstance(names, dict):
        if not all(isinstance(k, int) for k in names) or sorted(names) != list(range(len(names))):
            raise EdgeSDKError(f"model metadata 'names': expected class indices 0..N-1, got {sorted(names)[:8]}")
        labels = [str(names[i]) for i in range(len(names))]
    elif isinstance(names, (list, tuple)):
        labels = [str(n) for n in names]
    else:
        raise EdgeSDKError(f"model metadata 'names': expected a dict of index -> name, got {type(names).__name__}")
    src = f"Ultralytics metadata (task {task}"
    if "imgsz" in props:
        imgsz = _literal("imgsz", props["imgsz"])
        imgsz = [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz)
        if len(imgsz) != 2 or not all(isinstance(v, int) and v > 0 for v in imgsz):
            raise EdgeSDKError(f"model metadata 'imgsz': expected [height, width], got {props['imgsz']!r}")
        size = [imgsz[1], imgsz[0]]  # Ultralytics writes height, width; ours is width, height
        src += f", imgsz {imgsz}"
    else:
        size = None
    src += ")"
    if task not in ULTRALYTICS_TASKS:
        info.refused = f"Ultralytics task {task!r} is unknown (known: {', '.join(ULTRALYTICS_TASKS)})"
    elif task not in ULTRALYTICS_DECODED:
        info.refused = (f"Ultralytics task {task!r} is not decoded by edgesdk (only "
                        f"{' and '.join(ULTRALYTICS_DECODED)} are)")
    info.labels = labels
    info.sources["labels"] = f"{src}: names, {len(labels)} classes"
    if task == "classify":
        # Ultralytics classifies a resized centre crop /255 with no mean/std; a stretch is the nearest we do
        info.preprocess = {**ULTRALYTICS_PREPROCESS, "resize": "stretch", **({"size": size} if size else {})}
        info.sources["preprocess"] = f"{src} (Ultralytics crops the centre; a stretch is the nearest)"
        info.postprocess = {"kind": "topk", "k": 5}
        info.sources["postprocess"] = f"{src}: topk"
    else:
        info.preprocess = {**ULTRALYTICS_PREPROCESS, **({"size": size} if size else {})}
        info.sources["preprocess"] = src
        if task == "detect":
            out = _dims(proto.graph.output[0]) if proto.graph.output else []
            nc = len(labels)
            if len(out) == 3 and (out[1] == 4 + nc or not isinstance(out[1], int)):  # symbolic: checked at run
                info.postprocess = {"kind": "yolo", "format": "v8"}
                info.sources["postprocess"] = f"{src}: yolo v8 decode + NMS of {out} (4 + {nc} classes)"
            else:
                info.refused = (f"Ultralytics detect output {out} is not the YOLOv8 head [1, 4 + {nc}, N] "
                                "(an export with nms=True or an end-to-end head is not decoded)")
    return info


def _paddle(proto, props: dict) -> ExporterInfo:
    info = ExporterInfo("paddle")
    out = _dims(proto.graph.output[0]) if proto.graph.output else []
    if "character" in props and len(out) == 3:
        chars = props["character"].split("\n")  # not splitlines(): the dictionary may hold \x1c and the like
        classes = out[2]
        if isinstance(classes, int) and classes == len(chars) + 1:
            labels, how = ["", *chars], "blank first"
        else:  # use_space_char: the default of every PP-OCR rec config
            labels, how = ["", *chars, " "], "blank first, space last"
            if isinstance(classes, int) and classes != len(labels):
                raise EdgeSDKError(f"model metadata 'character' holds {len(chars)} characters: with CTC's blank "
                                   f"and a space that is {len(labels)} classes, but output "
                                   f"{proto.graph.output[0].name!r} has {classes}")
        info.labels = labels
        info.sources["labels"] = f"PaddleOCR metadata character: {len(chars)} characters, {how} (CTC)"
        info.postprocess = {"kind": "ppocr-rec"}
        info.sources["postprocess"] = "PaddleOCR rec (character metadata, [N, T, classes] output): ppocr-rec"
        info.preprocess = {**PADDLE_PREPROCESS, "size": list(PADDLE_REC_SIZE)}
        info.sources["preprocess"] = "PaddleOCR rec convention (rec_image_shape 3,48,320)"
        return info
    if len(out) == 4 and out[1] == 1:  # DBNet probability map [N, 1, H, W]
        from edgesdk.device.postprocess import PPOCR_COLOR, PPOCR_MEAN, PPOCR_STD

        info.preprocess = {"resize": "stretch", "color": PPOCR_COLOR, "mean": list(PPOCR_MEAN), "std": list(PPOCR_STD)}
        info.sources["preprocess"] = "PaddleOCR det convention (paddle2onnx dims)"
        info.postprocess = {"kind": "ppocr-det"}
        info.sources["postprocess"] = "PaddleOCR det ([N, 1, H, W] probability map): ppocr-det"
    elif len(out) == 2 and out[1] == len(PADDLE_CLS_LABELS):
        info.preprocess = {**PADDLE_PREPROCESS, "size": list(PADDLE_CLS_SIZE)}
        info.sources["preprocess"] = "PaddleOCR cls convention (cls_image_shape 3,48,192)"
        info.postprocess = {"kind": "topk", "k": 2}
        info.labels = list(PADDLE_CLS_LABELS)
        info.sources["postprocess"] = "PaddleOCR cls (2 classes): topk"
        info.sources["labels"] = "PaddleOCR cls label_list: '0', '180'"
    return info


__all__ = ["ExporterInfo", "read_exporter", "META_PREPROCESS", "META_POSTPROCESS", "META_LABELS"]


def settle_shapes(inputs, shapes: dict, ranges: dict, size: tuple[int, int] | None, size_source: str
                  ) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Fix the dynamic dims nothing else fixes: a dynamic batch becomes 1; an image input's height and
    width come from the preprocessing size (width, height) when its layout is clear (3 channels at
    dim 1 or 3). Inputs in `shapes` (--shape, [inputs] shape) or `ranges` are left as given.
    Returns the shapes with those added and one line per input saying what was fixed. Dims that
    nothing determines are an error naming them."""
    shapes, lines = dict(shapes), []
    for t in inputs:
        if t.name in shapes or t.name in ranges or t.is_static:
            continue
        dims, fixed = list(t.shape), []
        if dims and not isinstance(dims[0], int):
            dims[0] = 1
            fixed.append(f"batch {t.shape[0]!r} -> 1")
        if len(dims) == 4 and size is not None and (dims[1] == 3 or dims[3] == 3):
            h_at, w_at = (2, 3) if dims[1] == 3 else (1, 2)
            for at, value, what in ((h_at, size[1], "height"), (w_at, size[0], "width")):
                if not isinstance(dims[at], int):
                    fixed.append(f"{what} {dims[at]!r} -> {value} ({size_source})")
                    dims[at] = value
        open_dims = [d for d in dims if not isinstance(d, int)]
        if open_dims:
            raise EdgeSDKError(
                f"input {t.name!r} {list(t.shape)}: nothing determines dims {open_dims} (the profile has no "
                f"[inputs] or [preprocess] size for it and the model's metadata names none): give "
                f"--shape {t.name}={'x'.join(str(d) if isinstance(d, int) else '?' for d in dims)} with each ? set")
        shapes[t.name] = tuple(int(d) for d in dims)
        lines.append(f"input {t.name!r} {list(t.shape)} fixed to {dims}: {', '.join(fixed)}")
    return shapes, lines



@dataclass
class Settled:
    """What package builds with, each setting from the first that gives it: the caller's arguments, the
    target profile, the model's metadata, then a default. `lines` say where each came from."""

    shapes: dict
    spec: object  # PreprocessSpec | None (not an image model)
    postprocess: dict
    labels: list[str] | None
    lines: list[str]


def _describe_spec(s) -> str:
    resize = f"letterbox pad {s.pad}" if s.resize == "letterbox" else s.resize
    fmt = lambda v: "[" + ", ".join(f"{x:g}" for x in v) + "]"  # noqa: E731
    return f"{s.size[0]}x{s.size[1]} {resize}, {s.color}, mean {fmt(s.mean)} std {fmt(s.std)}, {s.layout}"


def settle_inputs(proto, profile, shapes: dict, spec=None, labels: list[str] | None = None,
                  source: str = "model") -> Settled:
    """Input shapes, preprocessing, postprocessing and labels for `package`: explicit arguments >
    the profile > the model's exporter metadata > today's defaults (ImageNet mean/std, stretch, no
    postprocessing), the last with a loud note that preprocessing was guessed."""
    from edgesdk.backends.base import TensorInfo
    from edgesdk.build.calibration import image_layout, input_spec
    from edgesdk.build.model import check_input_sizes, graph_inputs, io_dicts
    from edgesdk.device.postprocess import get as get_post
    from edgesdk.device.preprocess import PreprocessSpec

    info = read_exporter(proto)
    lines: list[str] = []
    pre_src = None
    if spec is not None:
        pre_src = "the --mean/--std/--color arguments"
    elif profile.preprocess is not None:
        spec, pre_src = profile.preprocess, "the profile's [preprocess]"
    elif info.preprocess is not None:
        spec, pre_src = PreprocessSpec.from_dict(info.preprocess), info.sources["preprocess"]
    if profile.preprocess is not None:
        size, size_src = profile.preprocess.size, "the profile's [preprocess] size"
    elif info.preprocess is not None and "size" in info.preprocess:
        size, size_src = tuple(info.preprocess["size"]), info.sources["preprocess"]
    else:
        size, size_src = None, ""
    inputs = [TensorInfo.from_dict(d) for d in io_dicts(graph_inputs(proto))]
    shapes, shape_lines = settle_shapes(inputs, shapes, profile.ranges, size, size_src)
    check_input_sizes(proto, shapes, profile.ranges, source=source)  # before the spec is sized from the inputs
    lines += shape_lines

    first = inputs[0]
    first_shape = shapes.get(first.name) or (profile.ranges[first.name].opt if first.name in profile.ranges
                                             else first.shape)
    image_model = image_layout(first) is not None and all(isinstance(d, int) for d in first_shape)
    # the chosen normalisation and resize; size, layout and dtype follow the input
    spec = input_spec(first, tuple(first_shape), spec) if image_model else None
    if spec is not None:
        if pre_src:
            lines.append(f"preprocess from {pre_src}: {_describe_spec(spec)}")
        else:
            lines.append(f"WARNING: preprocessing GUESSED ({_describe_spec(spec)}, ImageNet's): neither the profile "
                         "nor the model's metadata says how its input is prepared; check it, and give [preprocess] "
                         "in a target profile if it differs")

    post = dict(profile.postprocess)
    if profile.postprocess_given or post.get("kind", "none") != "none":
        lines.append(f"postprocess from the profile's [postprocess]: {post.get('kind', 'none')}")
    elif info.refused:
        raise EdgeSDKError(f"{info.refused}: give [postprocess] kind = \"none\" in a target profile to ship its raw "
                           "outputs")
    elif info.postprocess is not None:
        post = dict(info.postprocess)
        lines.append(f"postprocess from {info.sources['postprocess']}")
    else:
        post = {"kind": "none"}
        lines.append("postprocess: none (raw outputs): neither the profile nor the model's metadata names one")
    if labels is not None:
        lines.append(f"labels from the caller: {len(labels)}")
    elif info.labels is not None:
        labels = info.labels
        lines.append(f"labels from {info.sources['labels']}")
    get_post(post.get("kind", "none"), {k: v for k, v in post.items() if k != "kind"}, labels=labels)  # fail early
    return Settled(shapes, spec, post, labels, lines)


__all__ += ["settle_shapes", "settle_inputs", "Settled"]
