"""Per-backend compatibility of an ONNX model: operators, domains, opsets and dynamic input dims.

The support tables below are plain data taken from each engine's own documentation (the source is
named above each table). Where an engine is installed, `probe=True` tries it for real and its
answer overrides the table. Build side: onnx and the engines are imported lazily.
"""
from __future__ import annotations

import numbers
import re
import signal
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EdgeSDKError, ModelError
from .model import DEFAULT_DOMAINS, dim_values, fix_input_shapes, graph_inputs, oversized_input, type_name

BACKENDS = ("ncnn", "openvino", "tensorrt", "onnxruntime")
ENGINE = {"ncnn": "pnnx/ncnn", "openvino": "OpenVINO", "tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime"}
ML_DOMAIN = "ai.onnx.ml"
PROBE_TIMEOUT_S = 60


def _ops(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ---------------------------------------------------------------------------- ncnn via pnnx
# pnnx's README (Tencent/ncnn tools/pnnx/README.md, "Supported ONNX operator status", rows ticked in
# both columns), plus the unary ops its src/pass_onnx.cpp maps to aten ops and Upsample, Einsum,
# Expand, GridSample, which its pass_level2 ONNX patterns lower. Erf and Upsample are blank in the
# README, yet pnnx 20261020 turned each addition into ncnn layers on single-op models here.
NCNN_SUPPORTED = {"": _ops("""
    Abs Acos Acosh Add Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Concat
    Constant Conv ConvTranspose Cos Cosh DepthToSpace Div Dropout Einsum Elu Erf Exp Expand Flatten
    Floor GRU Gelu Gemm GlobalAveragePool GlobalMaxPool GridSample GroupNormalization HardSigmoid
    HardSwish Identity InstanceNormalization LRN LSTM LayerNormalization LeakyRelu Log LogSoftmax
    MatMul Max MaxPool Min Mish Mul Neg PRelu Pad Pow RMSNormalization RNN Reciprocal ReduceL1
    ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize Round Selu Shrink Sigmoid Sign Sin Sinh Slice Softmax
    Softplus Split Sqrt Squeeze Sub Sum Tan Tanh Transpose Unsqueeze Upsample
""")}
# Absent from that README and left as "todo <op>" (no ncnn layer) by pnnx 20261020 on single-op models.
NCNN_UNSUPPORTED = _ops("""
    CumSum Det GlobalLpPool Hardmax IsInf IsNaN LpNormalization LpPool MaxUnpool Mean
    MeanVarianceNormalization ScatterND Softsign Swish ThresholdedRelu Trilu
""")
# ncnn's layer types (ncnn_add_layer in src/CMakeLists.txt), for reading pnnx's .param output
# when the ncnn Python package is not installed.
NCNN_LAYERS = _ops("""
    AbsVal ArgMax BatchNorm Bias BNLL Concat Convolution Crop Deconvolution Dropout Eltwise ELU Embed
    Exp Flatten InnerProduct Input Log LRN MemoryData MVN Pooling Power PReLU Proposal Reduction ReLU
    Reshape ROIPooling Scale Sigmoid Slice Softmax Split SPP TanH Threshold Tile RNN LSTM BinaryOp
    UnaryOp ConvolutionDepthWise Padding Squeeze ExpandDims Normalize Permute PriorBox DetectionOutput
    Interp DeconvolutionDepthWise ShuffleChannel InstanceNorm Clip Reorg YoloDetectionOutput Quantize
    Dequantize Yolov3DetectionOutput PSROIPooling ROIAlign Packing Requantize Cast HardSigmoid SELU
    HardSwish Noop PixelShuffle DeepCopy Mish StatisticsPooling Swish Gemm GroupNorm LayerNorm
    Softplus GRU MultiHeadAttention GELU Convolution1D Pooling1D ConvolutionDepthWise1D Convolution3D
    ConvolutionDepthWise3D Pooling3D MatMul Deconvolution1D DeconvolutionDepthWise1D Deconvolution3D
    DeconvolutionDepthWise3D Einsum DeformableConv2D GLU Fold Unfold GridSample CumulativeSum CopyTo
    Erf Diag CELU Shrink RMSNorm Spectrogram InverseSpectrogram Flip SDPA RotaryEmbed
""")
# pnnx's names for ONNX ops it maps to torch ops that have no ncnn layer (src/pass_onnx.cpp).
PNNX_TO_ONNX = {
    "torch.eq": "Equal", "torch.lt": "Less", "torch.le": "LessOrEqual", "torch.gt": "Greater",
    "torch.ge": "GreaterOrEqual", "torch.logical_and": "And", "torch.logical_or": "Or",
    "torch.logical_xor": "Xor", "torch.logical_not": "Not", "torch.bitwise_and": "BitwiseAnd",
    "torch.bitwise_or": "BitwiseOr", "torch.bitwise_xor": "BitwiseXor", "torch.bitwise_not": "BitwiseNot",
    "torch.where": "Where", "torch.tile": "Tile", "Tensor.to": "Cast",
}

# ---------------------------------------------------------------------------- OpenVINO
# openvinotoolkit/openvino src/frontends/onnx/docs/supported_ops.md: rows with a "Supported Version".
OPENVINO_SUPPORTED = {
    "": _ops("""
        ATen Abs Acos Acosh Add Affine AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh Attention
        AveragePool BatchNormalization BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
        BlackmanWindow Cast CastLike Ceil Celu CenterCropPad Clip Col2Im Compress Concat
        ConcatFromSequence Constant ConstantFill ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh
        Crop CumSum DFT DepthToSpace DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal
        Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm
        GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
        GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
        ImageScaler InstanceNormalization IsFinite IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu
        Less LessOrEqual Log LogSoftmax Loop LpNormalization MatMul MatMulInteger Max MaxPool MaxRoiPool
        Mean MeanVarianceNormalization Min Mish Mod Mul Multinomial Neg NegativeLogLikelihoodLoss
        NonMaxSuppression NonZero Not OneHot Or PRelu Pad Pow QLinearConv QLinearMatMul QuantizeLinear
        RMSNormalization RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
        Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
        ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign
        RotaryEmbedding Round STFT Scan Scatter ScatterElements ScatterND Selu SequenceAt
        SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength Shape Shrink
        Sigmoid Sign SimplifiedLayerNormalization Sin Sinh Size Slice Softmax SoftmaxCrossEntropyLoss
        Softplus Softsign SpaceToDepth Split SplitToSequence Sqrt Squeeze Sub Sum Tan Tanh
        ThresholdedRelu Tile TopK Transpose Trilu Unique Unsqueeze Upsample Where Xor
    """),
    ML_DOMAIN: _ops("Normalizer"),
    "com.microsoft": _ops("""
        Attention BiasAdd BiasGelu BifurcationDetector DequantizeLinear DynamicQuantizeMatMul
        EmbedLayerNormalization FastGelu FusedConv FusedGemm FusedMatMul GatherND Gelu GroupNorm
        GroupQueryAttention MatMulIntegerToFloat MatMulNBits Pad QLinearAdd QLinearAveragePool
        QLinearConcat QLinearLeakyRelu QLinearMul QLinearReduceMean QLinearSigmoid QLinearSoftmax
        QLinearWhere QuantizeLinear QuickGelu Range RotaryEmbedding SimplifiedLayerNormalization
        SkipLayerNormalization SkipSimplifiedLayerNormalization Trilu
    """),
    "org.openvinotoolkit": _ops("""
        DeformableConv2D DetectionOutput ExperimentalDetectronDetectionOutput
        ExperimentalDetectronGenerateProposalsSingleImage ExperimentalDetectronGroupNorm
        ExperimentalDetectronPriorGridGenerator ExperimentalDetectronROIFeatureExtractor
        ExperimentalDetectronTopKROIs FakeQuantize GenerateProposals GroupNorm Normalize PriorBox
        PriorBoxClustered Swish
    """),
    "org.pytorch.aten": _ops("adaptive_avg_pool2d"),
    "mmdeploy": _ops("MMCVRoIAlignRotated NMSRotated"),
}
# Same page, rows with no supported version. LpPool is left out: the page lists it unsupported,
# but OpenVINO 2026.4.1 converts it (Bernoulli, DeformConv, Det, MaxUnpool checked and refused).
OPENVINO_UNSUPPORTED = _ops("""
    Bernoulli DeformConv Det ImageDecoder MaxUnpool MelWeightMatrix Optional OptionalGetElement
    OptionalHasElement RegexFullMatch SequenceMap StringConcat StringNormalizer StringSplit
    TfIdfVectorizer
""")

# ---------------------------------------------------------------------------- TensorRT
# onnx/onnx-tensorrt docs/operators.md for TensorRT 10.15 ("Y" rows). Older TensorRT (JetPack)
# takes fewer ops. Ops outside the matrix go to the parser's plugin fallback.
TENSORRT_SUPPORTED = {"": _ops("""
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv
    ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal
    Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
    GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow
    HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
    MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
    OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
    ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
    Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK
    Transpose Trilu Unsqueeze Upsample Where Xor
""")}
# Same page, "N" rows.
TENSORRT_UNSUPPORTED = _ops("""
    AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad
    Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger
    MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
    OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt
    SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
    SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer
    Unique
""")

# ---------------------------------------------------------------------------- ONNX Runtime
# microsoft/onnxruntime docs/OperatorKernels.md, CPUExecutionProvider, as registered in ORT 1.31.1
# (the page is generated from the registered kernels, so it is the complete list). Constant is
# folded into initializers and needs no kernel; ops ONNX defines as functions are expanded.
ONNXRUNTIME_SUPPORTED = {
    "": _ops("""
        Abs Acos Acosh Add Affine AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh Attention
        AveragePool BatchNormalization BitCast BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
        BlackmanWindow Cast Ceil Celu Clip Col2Im Compress Concat ConcatFromSequence Constant
        ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh Crop CumProd CumSum DFT DeformConv
        DepthToSpace DequantizeLinear Det Div Dropout DynamicQuantizeLinear DynamicSlice Einsum Elu Equal
        Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm
        GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample HammingWindow
        HannWindow HardSigmoid Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM
        LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul
        MatMulInteger Max MaxPool MaxRoiPool MaxUnpool Mean MeanVarianceNormalization MelWeightMatrix Min
        Mod Mul Multinomial Neg NonMaxSuppression NonZero Not OneHot Optional OptionalGetElement
        OptionalHasElement Or PRelu Pad ParametricSoftplus Pow QLinearConv QLinearMatMul QuantizeLinear
        RMSNormalization RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
        Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
        ReduceProd ReduceSum ReduceSumSquare RegexFullMatch Relu Reshape Resize ReverseSequence RoiAlign
        RotaryEmbedding Round STFT Scale ScaledTanh Scan Scatter ScatterElements ScatterND Selu
        SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength Shape
        Shrink Sigmoid Sign SimplifiedLayerNormalization Sin Sinh Size Slice Softmax Softplus Softsign
        SpaceToDepth Split SplitToSequence Sqrt Squeeze StringConcat StringNormalizer StringSplit Sub Sum
        Tan Tanh TensorScatter TfIdfVectorizer ThresholdedRelu Tile TopK Transpose Trilu Unique Unsqueeze
        Upsample Where Xor
    """),
    ML_DOMAIN: _ops("""
        ArrayFeatureExtractor Binarizer CastMap CategoryMapper DictVectorizer FeatureVectorizer Imputer
        LabelEncoder LinearClassifier LinearRegressor Normalizer OneHotEncoder SVMClassifier
        SVMRegressor Scaler TreeEnsemble TreeEnsembleClassifier TreeEnsembleRegressor ZipMap
    """),
    "com.microsoft": _ops("""
        Attention AttnLSTM BeamSearch BiasGelu BifurcationDetector BranchwiseRMSNorm CDist
        CausalConvWithState ConvTransposeWithDynamicPads CropAndResize DecoderMaskedMultiHeadAttention
        DequantizeLinear DynamicQuantizeLSTM DynamicQuantizeMatMul DynamicTimeWarping
        EmbedLayerNormalization EngramGate ExpandDims FastGelu FusedConv FusedGemm FusedMatMul GatedAdd
        GatedRMSNorm GatherBlockQuantized GatherND Gelu GreedySearch GridSample GroupQueryAttention
        HyperConnectionPostMix HyperConnectionPreMix Inverse LinearAttention LinearAttentionGate
        MRotaryEmbedding MatMulBnb4 MatMulFpQ4 MatMulInteger16 MatMulIntegerToFloat MatMulNBits
        MaxpoolWithMask MoE MultiHeadAttention MurmurHash3 NGramHashMapping NGramRepeatBlock NhwcMaxPool
        Pad QAttention QEmbedLayerNormalization QGemm QLinearAdd QLinearAveragePool QLinearConcat
        QLinearConv QLinearGlobalAveragePool QLinearLeakyRelu QLinearMul QLinearSigmoid QLinearSoftmax
        QLinearWhere QMoE QuantizeLinear QuickGelu Range RotaryEmbedding SampleOp Sampling ScaledSiLU
        SkipLayerNormalization SkipSimplifiedLayerNormalization SparseAttention SparseToDenseMatMul
        Tokenizer TransposeMatMul Trilu UnfoldTensor Unique VarlenNGramHashMapping WhisperBeamSearch
        WordConvEmbedding
    """),
}

# backend -> (supported ops by domain, default-domain ops documented as unsupported)
TABLES = {
    "ncnn": (NCNN_SUPPORTED, NCNN_UNSUPPORTED),
    "openvino": (OPENVINO_SUPPORTED, OPENVINO_UNSUPPORTED),
    "tensorrt": (TENSORRT_SUPPORTED, TENSORRT_UNSUPPORTED),
    "onnxruntime": (ONNXRUNTIME_SUPPORTED, frozenset()),
}
# Tables listing every op the engine has; an op missing from them is unsupported, not unverified.
COMPLETE_TABLES = frozenset({"onnxruntime"})
# Engines that inline model-local functions (pnnx and ORT measured; onnx-tensorrt has a
# LocalFunctionImporter). OpenVINO 2026.4.1 reports "No conversion rule" for a local function call.
INLINES_FUNCTIONS = frozenset({"ncnn", "tensorrt", "onnxruntime"})

# (min, max) default-domain opset; None where neither docs nor the engine state a bound.
OPSET_RANGE = {
    "ncnn": (None, 26),  # pnnx 20261020's bundled onnxruntime 1.30 refuses opset 27 (measured)
    "openvino": (None, None),  # 2026.4.1 converts opset 28 models; its op table reaches opset 23
    "tensorrt": (9, 24),  # operators.md: "TensorRT 10.15 supports operators ... opset 9 to opset 24"
    "onnxruntime": (None, 26),  # 1.31.1: "Current official support for domain ai.onnx is till opset 26"
}
ML_OPSET_MAX = {"onnxruntime": 5}  # 1.31.1: "... domain ai.onnx.ml is till opset 5"
# ORT 1.31.1: "max supported IR version: 13". (edgesdk's ncnn converter lowers the IR for pnnx itself.)
IR_MAX = {"onnxruntime": 13}

FIX_HINT = {
    "ncnn": "pnnx cannot lower them: replace them in the model before export, or use the onnxruntime backend",
    "openvino": "they need an OpenVINO frontend extension, or use the onnxruntime backend",
    "tensorrt": "they need a TensorRT plugin, or use the onnxruntime backend",
    "onnxruntime": "they need a custom-op library (SessionOptions.register_custom_ops_library)",
}

# numpy dtype name -> pnnx inputshape type suffix
PNNX_TYPES = {
    "float32": "f32", "float16": "f16", "float64": "f64", "int8": "i8", "int16": "i16",
    "int32": "i32", "int64": "i64", "uint8": "u8", "bool": "bool",
}


@dataclass
class BackendCompat:
    """Whether one backend can take the model; `unsupported` holds op types ("domain:op" outside ONNX)."""

    supported: bool = True
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"supported": self.supported, "unsupported": list(self.unsupported), "notes": list(self.notes)}


@dataclass
class _Probe:
    """What an engine did with the model: ok, or the ops it named and why it failed."""

    ok: bool
    ops: list[str] = field(default_factory=list)
    reason: str = ""


def check_compat(
    model,
    model_path: Path | None = None,
    shapes: dict[str, tuple] | None = None,
    probe: bool = True,
) -> dict[str, BackendCompat]:
    """Compatibility of a checked, shape-inferred ONNX model with each backend, keyed as BACKENDS.

    `shapes` fixes dynamic inputs (as --shape does); `probe` runs the installed engines on the model
    (OpenVINO convert_model, an ONNX Runtime session, the pnnx converter), overriding the tables.
    """
    source = model_path or "model"
    inputs = _input_dims(model, dict(shapes or {}), source)
    inlined, calls = _model_ops(model, inline=True), _model_ops(model, inline=False)
    ops = {b: inlined if b in INLINES_FUNCTIONS else calls for b in BACKENDS}
    opsets = {("" if o.domain in DEFAULT_DOMAINS else o.domain): int(o.version) for o in model.opset_import}
    probes = {}
    if probe:  # an engine asked about an input too big to build would try to allocate it
        too_big = oversized_input(model, shapes)
        probes = ({b: f"not probed: {too_big[1]}" for b in BACKENDS} if too_big
                  else _run_probes(model, model_path, inputs, ops))

    report = {}
    for b in BACKENDS:
        unsupported, unverified = _table_answer(b, ops[b], opsets)
        limits = _limit_notes(b, opsets, int(model.ir_version))
        c = BackendCompat(supported=not unsupported and not limits, unsupported=unsupported, notes=limits)
        result = probes.get(b)
        if isinstance(result, _Probe):
            if result.ok:
                if c.unsupported:
                    c.notes.append(f"the table lists {', '.join(c.unsupported)}, yet {ENGINE[b]} took them")
                c.supported, c.unsupported = True, []
            else:
                c.supported = False
                c.unsupported = result.ops or c.unsupported
            if result.ok or result.ops:
                unverified = []
        c.notes.extend(_fix_notes(b, c.unsupported))
        if b not in INLINES_FUNCTIONS and any(_name(*f) in c.unsupported for f in calls - inlined):
            c.notes.append(f"{ENGINE[b]} does not inline model-local functions: inline them first "
                           f"(onnx.inliner.inline_local_functions)")
        c.notes.extend(_dynamic_notes(b, inputs))
        if unverified:
            c.notes.append(f"not in {ENGINE[b]}'s documented list; unverified: {', '.join(unverified)}")
        if isinstance(result, _Probe):
            c.notes.append(f"probe: {result.reason}")
        elif result:
            c.notes.append(result)
        report[b] = c
    return report


def format_compat(table: dict, width: int = 100) -> str:
    """The readable table: one row per backend (ok/NO, unsupported ops), then its notes, wrapped."""
    lead = 18
    lines = [f"{'backend':<13}{'':<5}unsupported ops / notes"]
    for name, c in table.items():
        d = c.to_dict() if isinstance(c, BackendCompat) else c
        status = "ok" if d["supported"] else "NO"
        lines += textwrap.wrap(
            ", ".join(d["unsupported"]) or "-", width,
            initial_indent=f"{name:<13}{status:<5}", subsequent_indent=" " * lead, break_on_hyphens=False,
        )
        for note in d["notes"]:
            lines += textwrap.wrap(
                note, width, initial_indent=" " * lead + "- ", subsequent_indent=" " * (lead + 2),
                break_on_hyphens=False,
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the model's side

def _input_dims(model, shapes: dict, source) -> list[tuple[str, list, str]]:
    """(name, dims, dtype) per real input, dynamic dims as strings, after applying `shapes`."""
    import onnx

    inputs = onnx.ModelProto()
    inputs.graph.input.extend(graph_inputs(model))
    for name, shape in shapes.items():
        if not all(isinstance(d, numbers.Integral) and d > 0 for d in shape):
            raise ModelError(f"{source}: shape for input {name!r} must be positive integers, got {list(shape)}")
    fix_input_shapes(inputs, {k: tuple(int(d) for d in v) for k, v in shapes.items()}, source=source)
    return [(i.name, dim_values(i.type), type_name(i.type)) for i in inputs.graph.input]


def _model_ops(model, inline: bool) -> set[tuple[str, str]]:
    """(domain, op_type) of every node, inside subgraphs too; with `inline`, calls to model-local
    functions are replaced by the functions' bodies."""
    functions = {(f.domain, f.name): f for f in model.functions}
    found: set[tuple[str, str]] = set()
    seen: set[tuple[str, str]] = set()

    def walk(nodes):
        for node in nodes:
            key = (node.domain, node.op_type)
            if inline and key in functions:
                if key not in seen:
                    seen.add(key)
                    walk(functions[key].node)
                continue
            found.add(("" if node.domain in DEFAULT_DOMAINS else node.domain, node.op_type))
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g.node)
                for g in attr.graphs:
                    walk(g.node)

    walk(model.graph.node)
    return found


def _name(domain: str, op: str) -> str:
    return f"{domain}:{op}" if domain else op


def _table_answer(backend: str, ops: set, opsets: dict) -> tuple[list[str], list[str]]:
    """(unsupported, unverified) op names for `backend` by its table."""
    supported, documented_no = TABLES[backend]
    bad, unknown = [], []
    for domain, op in sorted(ops):
        if op in supported.get(domain, ()):
            continue
        if domain == "" and backend == "onnxruntime" and _is_onnx_function(op, opsets.get("", 1)):
            continue
        if domain == "" and op not in documented_no and backend not in COMPLETE_TABLES:
            unknown.append(op)
            continue
        # Ops of other domains count as unsupported unless the engine's table lists them.
        bad.append(_name(domain, op))
    return bad, unknown


def _is_onnx_function(op: str, opset: int) -> bool:
    """ONNX defines the op as a function of other ops (engines may expand it)."""
    import onnx

    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except Exception:  # SchemaError: not an ONNX op at this opset
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def _limit_notes(backend: str, opsets: dict, ir_version: int) -> list[str]:
    notes = []
    lo, hi = OPSET_RANGE[backend]
    opset = opsets.get("")
    if opset is not None and hi is not None and opset > hi:
        notes.append(f"opset {opset} is newer than {ENGINE[backend]}'s max {hi}: re-export at opset {hi} "
                     f"(or onnx.version_converter.convert_version(model, {hi}))")
    if opset is not None and lo is not None and opset < lo:
        notes.append(f"opset {opset} is older than {ENGINE[backend]}'s min {lo}: "
                     f"onnx.version_converter.convert_version(model, {lo})")
    ml, ml_max = opsets.get(ML_DOMAIN), ML_OPSET_MAX.get(backend)
    if ml is not None and ml_max is not None and ml > ml_max:
        notes.append(f"{ML_DOMAIN} opset {ml} is newer than {ENGINE[backend]}'s max {ml_max}: re-export with "
                     f"target_opset={{'{ML_DOMAIN}': {ml_max}}}")
    ir_max = IR_MAX.get(backend)
    if ir_max is not None and ir_version > ir_max:
        notes.append(f"IR version {ir_version} is newer than {ENGINE[backend]}'s max {ir_max}: "
                     f"save with model.ir_version = {ir_max}")
    return notes


def _fix_notes(backend: str, unsupported: list[str]) -> list[str]:
    ml = [op for op in unsupported if op.startswith(ML_DOMAIN + ":")]
    other = [op for op in unsupported if op not in ml]
    notes = []
    if ml:
        notes.append(f"{ML_DOMAIN} (classic ML, e.g. scikit-learn via skl2onnx) ops have no {ENGINE[backend]} "
                     f"conversion: {', '.join(o.split(':', 1)[1] for o in ml)}; use the onnxruntime backend")
    if other:
        notes.append(f"{', '.join(other)}: {FIX_HINT[backend]}")
    return notes


def _shape_suggestion(name: str, dims: list) -> str:
    from .backends.base import TensorInfo
    from .backends.ncnn.convert import _shape_hint  # the hint the ncnn converter itself gives

    return _shape_hint(TensorInfo(name, tuple(dims), "float32"))


def _dynamic_notes(backend: str, inputs: list) -> list[str]:
    notes = []
    for name, dims, _ in inputs:
        dynamic = [d for d in dims if not isinstance(d, int)]
        if not dynamic:
            continue
        fix = _shape_suggestion(name, dims)
        if backend == "tensorrt":
            notes.append(f"input '{name}' has dynamic dims {dynamic}: TensorRT needs min/opt/max ranges "
                         f"(profile [inputs.{name}] min/opt/max) — or fix with {fix}")
        elif backend == "ncnn" and all(isinstance(d, int) for d in dims[1:]):
            notes.append(f"input '{name}' has a dynamic batch dim {dynamic}: ncnn runs one sample at a time, "
                         f"so pnnx converts it at batch 1")
        elif backend == "ncnn":
            notes.append(f"input '{name}' has dynamic dims {dynamic}: pnnx needs an input shape to convert — "
                         f"{fix}, or profile [inputs.{name}] min/opt/max to keep them dynamic (pnnx inputshape2); "
                         f"ncnn drops the batch dim")
    return notes


# ---------------------------------------------------------------------------- probes

def _run_probes(model, model_path, inputs, ops: dict[str, set]) -> dict[str, _Probe | str]:
    """Each installed engine's verdict, or a note saying why it was not asked. Never raises."""
    import importlib.util

    trt = ("not probed: tensorrt not installed" if importlib.util.find_spec("tensorrt") is None
           else "not probed: edgesdk does not probe TensorRT; the table answers")
    out: dict[str, _Probe | str] = {"tensorrt": trt}
    with tempfile.TemporaryDirectory(prefix="edgesdk-compat-") as tmp:
        tmp = Path(tmp)
        path = Path(model_path) if model_path and Path(model_path).is_file() else tmp / "model.onnx"
        if path.parent == tmp:
            try:
                path.write_bytes(model.SerializeToString())
            except ValueError as e:  # protobuf's 2 GB limit
                note = f"not probed: the model cannot be serialized ({e}); pass its file path"
                return {**out, "ncnn": note, "openvino": note, "onnxruntime": note}
        for backend, probe in (("onnxruntime", _probe_onnxruntime), ("openvino", _probe_openvino)):
            try:
                out[backend] = probe(path, ops[backend])
            except ImportError:
                out[backend] = f"not probed: {backend} not installed"
            except Exception as e:  # an engine failing oddly must not sink the report
                out[backend] = f"not probed: {backend} probe failed unexpectedly: {_key_line(str(e))}"
        try:
            out["ncnn"] = _probe_ncnn(model, tmp / "pnnx", inputs, ops["ncnn"])
        except Exception as e:
            out["ncnn"] = f"not probed: pnnx probe failed unexpectedly: {_key_line(str(e))}"
    return out


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return dist


def _report_names(names, ops: set) -> list[str]:
    """Engine-reported op names (maybe 'domain.Op' or 'Op-17') as the report spells them."""
    out = set()
    for raw in names:
        token = re.sub(r"-\d+$", "", raw.strip())
        match = [_name(d, op) for d, op in ops if op == token or f"{d}.{op}" == token or f"{d}:{op}" == token]
        out.update(match or [token])
    return sorted(out)


def _key_line(message: str) -> str:
    """The telling line of an engine's error message, without source paths and C++ signatures."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    line = lines[-1] if lines else message
    line = re.sub(r"^.*\.(?:cc|cpp|h):\d+ \S+\(.*?\) ", "", line)
    return line if len(line) <= 200 else line[:197] + "..."


def _probe_onnxruntime(path: Path, ops: set) -> _Probe:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # kernels are still resolved
    who = _version("onnxruntime")
    try:
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = str(e)
        names = re.findall(r"Could not find an implementation for (\w+)\(", msg)
        names += re.findall(r"([\w.]+:\w+)\(-?\d+\) is not a registered function/op", msg)
        names += re.findall(r"No Op registered for (\w+)", msg)
        known = re.search(
            r"Unsupported model IR version[^\n]*|Current official support for domain [\w.]+ is till opset \d+", msg)
        reason = known.group(0) if known else _key_line(msg)
        return _Probe(False, _report_names(names, ops), f"{who} refused it: {reason}")
    return _Probe(True, reason=f"{who} loaded it")


def _probe_openvino(path: Path, ops: set) -> _Probe:
    import openvino as ov

    who = _version("openvino")
    try:
        ov.convert_model(str(path))
    except Exception as e:
        msg = str(e)
        no_rule = [n for m in re.findall(r"No conversion rule found for operations: (.+)", msg) for n in m.split(",")]
        failed = [n for m in re.findall(r"Conversion is failed for: (.+)", msg) for n in m.split(",")]
        # An op that failed only because its input came from an op without a rule is collateral.
        names = _report_names(no_rule or failed, ops)
        reason = f"no conversion rule for {', '.join(names)}" if no_rule else _key_line(msg)
        if no_rule and failed:
            reason += f"; conversion also failed for {', '.join(_report_names(failed, ops))}"
        return _Probe(False, names, f"{who} convert_model failed: {reason}")
    return _Probe(True, reason=f"{who} converted it")


def _probe_ncnn(model, work: Path, inputs: list, ops: set) -> _Probe | str:
    """Run the pnnx converter (it writes ncnn's .param) and read what it could not lower."""
    from .backends.ncnn.convert import _write_work_model, find_pnnx

    try:
        pnnx = find_pnnx()
    except EdgeSDKError:
        return "not probed: pnnx not installed (pip install --no-deps pnnx)"
    specs = []
    for name, dims, dtype in inputs:
        # A dynamic batch becomes 1, as the ncnn converter does; other dynamic dims need a shape.
        dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(dims)]
        if not all(isinstance(d, int) for d in dims):
            return f"not probed: pnnx needs a fixed shape for input '{name}' {dims}; pass shapes to probe it"
        if dtype not in PNNX_TYPES:
            return f"not probed: pnnx takes tensor inputs of plain dtypes; input '{name}' is {dtype}"
        specs.append(f"[{','.join(str(d) for d in dims)}]{PNNX_TYPES[dtype]}")
    work.mkdir()
    try:
        _write_work_model(model, work / "model.onnx", "model")
    except ModelError as e:
        return f"not probed: {e}"
    try:
        proc = subprocess.run(
            [str(pnnx), "model.onnx", f"inputshape={','.join(specs)}", "fp16=0"],
            cwd=work, capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"not probed: pnnx did not finish within {PROBE_TIMEOUT_S} s"
    who = _version("pnnx")
    log = proc.stdout + proc.stderr
    names = re.findall(r"^todo (\S+)", log, re.M) + re.findall(r"unexpected op_type (\S+)", log)
    names += re.findall(r"No Op registered for (\w+)", log)
    leftovers = []
    param = work / "model.ncnn.param"
    if proc.returncode == 0 and param.is_file():
        known = _ncnn_layer_check()
        model_ops = {op for d, op in ops if not d}
        # a .param line after the two header lines starts with the layer type
        kinds = [ln.split()[0] for ln in param.read_text(errors="replace").splitlines()[2:] if ln.strip()]
        for kind in kinds:
            if known(kind):
                continue
            onnx_op = kind if kind in model_ops else PNNX_TO_ONNX.get(kind)
            if onnx_op in model_ops:
                names.append(onnx_op)
            else:
                leftovers.append(kind)
        if not names and not leftovers:
            return _Probe(True, reason=f"{who} converted it to ncnn layers")
    unsupported = _report_names(names, ops)
    reasons = []
    if unsupported:
        reasons.append(f"no ncnn layer for {', '.join(unsupported)}")
    if leftovers:
        reasons.append(f"pnnx left ops ncnn has no layer for: {', '.join(sorted(set(leftovers)))}")
    if proc.returncode != 0:
        rc = proc.returncode
        how = (f"crashed ({signal.Signals(-rc).name})" if rc < 0 and -rc in signal.valid_signals()
               else f"exited with code {rc}")
        errors = [ln for ln in log.splitlines() if re.search(r"fail|error|unsupported", ln, re.I)]
        # the op names, when pnnx printed them, say more than its last words
        reasons.append(f"pnnx {how}" + (f": {_key_line(errors[-1])}" if errors and not unsupported else ""))
    elif not param.is_file():
        reasons.append("pnnx wrote no ncnn .param")
    return _Probe(False, unsupported, f"{who} failed: {'; '.join(reasons)}")


def _ncnn_layer_check():
    """layer type -> bool: the installed ncnn's registry, else ncnn's layer list above."""
    try:
        import ncnn
    except ImportError:
        return lambda kind: kind in NCNN_LAYERS
    return lambda kind: ncnn.layer_to_index(kind) >= 0
