"""The support tables compat answers from: plain data taken from each engine's own documentation
(the source is named above each table), and the limits (opsets, IR versions) measured on the
engines. No imports: the converters read them too."""
from __future__ import annotations

ML_DOMAIN = "ai.onnx.ml"


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

# TensorRT's matrix by release: (supported ops by domain, "N" rows, (min, max) default-domain opset).
# JetPack 6 ships TensorRT 10.3, which takes fewer ops than 10.15 and opsets only up to 20. The 10.1 GA
# page (onnx/onnx-tensorrt release/10.1-GA, "opset 9 to opset 20") is the newest at or below 10.3 in
# hand, so it answers for 10.1 up to 10.14: it may miss an op 10.3 added, never claim one it lacks.
# 10.1 lacks these 10.15 rows: Attention, ReduceL1, ReduceL2, RMSNormalization, RotaryEmbedding,
# TensorScatter (absent) and BlackmanWindow, HammingWindow, HannWindow, STFT ("N"); Col2Im is absent.
_TRT_10_1_NEW_NO = frozenset({"BlackmanWindow", "HammingWindow", "HannWindow", "STFT"})
TENSORRT_RELEASES = {
    "10.1": ({"": TENSORRT_SUPPORTED[""] - _TRT_10_1_NEW_NO - {"Attention", "ReduceL1", "ReduceL2",
                                                               "RMSNormalization", "RotaryEmbedding", "TensorScatter"}},
             (TENSORRT_UNSUPPORTED - {"Col2Im"}) | _TRT_10_1_NEW_NO, (9, 20)),
    "10.15": (TENSORRT_SUPPORTED, TENSORRT_UNSUPPORTED, (9, 24)),
}
JETPACK6_TENSORRT = "10.3"  # what the jetson profiles build for and compat assumes when nothing says


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def tensorrt_table(version: str):
    """(supported by domain, "N" rows, opset range) of the newest table at or below TensorRT `version`
    (the oldest table for anything older)."""
    fitting = [r for r in TENSORRT_RELEASES if _release(r) <= _release(version)]
    return TENSORRT_RELEASES[max(fitting, key=_release) if fitting else min(TENSORRT_RELEASES, key=_release)]


# ---------------------------------------------------------------------------- ONNX Runtime
# microsoft/onnxruntime docs/OperatorKernels.md, CPUExecutionProvider, as registered in ORT 1.32.0 (the
# locked version; 1.32 added GatedDeltaNet, GatherPacked, MoEGroupRouter, VarlenCausalConvWithState)
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
        GatedDeltaNet GatedRMSNorm GatherBlockQuantized GatherND GatherPacked Gelu GreedySearch GridSample
        GroupQueryAttention HyperConnectionPostMix HyperConnectionPreMix Inverse LinearAttention LinearAttentionGate
        MRotaryEmbedding MatMulBnb4 MatMulFpQ4 MatMulInteger16 MatMulIntegerToFloat MatMulNBits
        MaxpoolWithMask MoE MoEGroupRouter MultiHeadAttention MurmurHash3 NGramHashMapping NGramRepeatBlock
        NhwcMaxPool         Pad QAttention QEmbedLayerNormalization QGemm QLinearAdd QLinearAveragePool QLinearConcat
        QLinearConv QLinearGlobalAveragePool QLinearLeakyRelu QLinearMul QLinearSigmoid QLinearSoftmax
        QLinearWhere QMoE QuantizeLinear QuickGelu Range RotaryEmbedding SampleOp Sampling ScaledSiLU
        SkipLayerNormalization SkipSimplifiedLayerNormalization SparseAttention SparseToDenseMatMul
        VarlenCausalConvWithState
        Tokenizer TransposeMatMul Trilu UnfoldTensor Unique VarlenNGramHashMapping WhisperBeamSearch
        WordConvEmbedding
    """),
}

# ---------------------------------------------------------------------------- rknn (Rockchip NPU)
# airockchip/rknn-toolkit2 doc/RKNNToolKit2_OP_Support-2.3.2.md, "ONNX OPs supported" (the newest list
# published; rows with restrictions count as supported), for the locked toolkit 2.5.0. Ops the list marks
# "Not Supported" that 2.5.0 built for rk3588 with an NPU lowering on single-op models here are moved to
# the supported set: Abs CumSum Einsum GatherND GridSample Hardmax Neg Not Reciprocal ReduceL2
# ReduceLogSumExp Round Sum ThresholdedRelu TopK. The rest it refuses or leaves unlowered ("No lowering
# found ..., use CustomOperatorLower", e.g. Sign, Selu, Trilu, ReduceProd were measured).
_RKNN_LOWERED = _ops("""
    Abs CumSum Einsum GatherND GridSample Hardmax Neg Not Reciprocal ReduceL2 ReduceLogSumExp Round Sum
    ThresholdedRelu TopK
""")
RKNN_SUPPORTED = {"": _ops("""
    Add And ArgMax ArgMin AveragePool BatchNormalization Cast Clip Concat Constant ConstantOfShape Conv
    ConvTranspose Cos DepthToSpace DequantizeLinear Div Dropout Elu Equal Erf Exp Expand EyeLike Flatten
    Floor GRU Gather GatherElements Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual
    HardSigmoid HardSwish Identity If InstanceNormalization LRN LSTM LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax LpNormalization MatMul Max MaxPool MaxRoiPool MaxUnpool
    MeanVarianceNormalization Min Mish Mod Mul PRelu Pad Pow QuantizeLinear ReduceMax ReduceMean
    ReduceMin ReduceSum Relu Reshape Resize ReverseSequence RoiAlign ScatterND Shape Sigmoid Sin Size
    Slice Softmax Softplus SpaceToDepth Split Sqrt Squeeze Sub Tanh Tile Transpose Unsqueeze Where
""") | _RKNN_LOWERED}
RKNN_UNSUPPORTED = _ops("""
    Acos Acosh Asin Asinh Atan Atanh Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
    BlackmanWindow CastLike Ceil Celu CenterCropPad Col2Im Compress ConcatFromSequence ConvInteger Cosh
    DFT DeformConv Det DynamicQuantizeLinear GlobalLpPool GroupNormalization HammingWindow HannWindow
    IsInf IsNaN Loop LpPool MatMulInteger Mean MelWeightMatrix Multinomial NegativeLogLikelihoodLoss
    NonMaxSuppression NonZero OneHot Optional OptionalGetElement OptionalHasElement Or QLinearConv
    QLinearMatMul RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range ReduceL1
    ReduceLogSum ReduceProd ReduceSumSquare STFT Scan ScatterElements Selu SequenceAt SequenceConstruct
    SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap Shrink Sign Sinh
    SoftmaxCrossEntropyLoss Softsign SplitToSequence StringNormalizer Tan TfIdfVectorizer Trilu Unique Xor
""")
RKNN_PLATFORM = "rk3588"  # what compat judges for: the table above and the live probe's target_platform

# backend -> (supported ops by domain, default-domain ops documented as unsupported)
TABLES = {
    "ncnn": (NCNN_SUPPORTED, NCNN_UNSUPPORTED),
    "openvino": (OPENVINO_SUPPORTED, OPENVINO_UNSUPPORTED),
    "tensorrt": (TENSORRT_SUPPORTED, TENSORRT_UNSUPPORTED),
    "onnxruntime": (ONNXRUNTIME_SUPPORTED, frozenset()),
    "rknn": (RKNN_SUPPORTED, RKNN_UNSUPPORTED),
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
    # the locked 1.32.0 (tools/lock.txt): "Current official support for domain ai.onnx is till opset 28"
    "onnxruntime": (None, 28),
    "rknn": (None, 19),  # 2.5.0's load_onnx: "Unsupport onnx opset 20, need <= 19!" (measured)
}
ML_OPSET_MAX = {"onnxruntime": 5}  # 1.31.1: "... domain ai.onnx.ml is till opset 5"
# ORT 1.32.0: "max supported IR version: 14". (edgesdk's ncnn converter lowers the IR for pnnx itself.)
IR_MAX = {"onnxruntime": 14}

FIX_HINT = {
    "ncnn": "pnnx cannot lower them: replace them in the model before export, or use the onnxruntime backend",
    "openvino": "they need an OpenVINO frontend extension, or use the onnxruntime backend",
    "tensorrt": "they need a TensorRT plugin, or use the onnxruntime backend",
    "onnxruntime": "they need a custom-op library (SessionOptions.register_custom_ops_library)",
    "rknn": ("rknn-toolkit2 cannot put them on the NPU: replace them in the model before export, give the board a "
             "custom op (rknn_register_custom_ops), or use the board's CPU (profile rk3588-cpu)"),
}

# numpy dtype name -> pnnx inputshape type suffix
PNNX_TYPES = {
    "float32": "f32", "float16": "f16", "float64": "f64", "int8": "i8", "int16": "i16",
    "int32": "i32", "int64": "i64", "uint8": "u8", "bool": "bool",
}
