"""Caffe's protobuf schema (the subset an importer needs), built at import time.

The message classes come from a ``FileDescriptorProto`` assembled from the table below and
added to a private descriptor pool, so nothing depends on a ``protoc`` version matching
the installed protobuf runtime. Field numbers are those of BVLC Caffe's ``caffe.proto``.

PoolingParameter field 13 has two incompatible meanings in the wild: BVLC's
``round_mode`` (enum, CEIL=0) and the ``ceil_mode`` (bool, default true) of OpenCV's proto
and several model repositories. Two schema variants are built; :func:`net_class` picks one.
``caffe_subset.proto`` next to this module is the same schema as text (for reading; a test
checks it matches :func:`schema_text`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["net_class", "blob_class", "message_class", "schema_text", "V1_TYPES"]

PACKAGE = "caffe"

# message -> list of (name, number, label, type, default). label: "o" optional, "r" repeated,
# "p" repeated packed. A type starting with an upper-case letter is a message or enum.
_ENGINE = ("Engine", ["DEFAULT", "CAFFE", "CUDNN"])

_ENUMS: dict[str, list[str]] = {
    "Phase": ["TRAIN", "TEST"],
}

# nested enums: message -> (enum name, values); a value is a name (numbered from 0 in
# order) or a (name, number) pair.
EnumValues = list[str] | list[tuple[str, int]]
_NESTED_ENUMS: dict[str, list[tuple[str, EnumValues]]] = {
    "FillerParameter": [("VarianceNorm", ["FAN_IN", "FAN_OUT", "AVERAGE"])],
    "ParamSpec": [("DimCheckMode", ["STRICT", "PERMISSIVE"])],
    "ConvolutionParameter": [_ENGINE],
    "PoolingParameter": [("PoolMethod", ["MAX", "AVE", "STOCHASTIC"]), _ENGINE,
                         ("RoundMode", ["CEIL", "FLOOR"])],
    "LRNParameter": [("NormRegion", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"]), _ENGINE],
    "ReLUParameter": [_ENGINE],
    "SigmoidParameter": [_ENGINE],
    "TanHParameter": [_ENGINE],
    "SoftmaxParameter": [_ENGINE],
    "EltwiseParameter": [("EltwiseOp", ["PROD", "SUM", "MAX"])],
    "BlobProto": [("DataType", ["DOUBLE", "FLOAT", "FLOAT16", "INT", "UINT"])],
    "ReductionParameter": [("ReductionOp", [("SUM", 1), ("ASUM", 2), ("SUMSQ", 3),
                                            ("MEAN", 4)])],
    "PriorBoxParameter": [("CodeType", [("CORNER", 1), ("CENTER_SIZE", 2),
                                        ("CORNER_SIZE", 3)])],
    "ResizeParameter": [
        ("Resize_mode", [("WARP", 1), ("FIT_SMALL_SIZE", 2), ("FIT_LARGE_SIZE_AND_PAD", 3)]),
        ("Pad_mode", [("CONSTANT", 1), ("MIRRORED", 2), ("REPEAT_NEAREST", 3)]),
        ("Interp_mode", [("LINEAR", 1), ("AREA", 2), ("NEAREST", 3), ("CUBIC", 4),
                         ("LANCZOS4", 5)]),
    ],
    "V1LayerParameter": [("LayerType", [
        "NONE", "ACCURACY", "BNLL", "CONCAT", "CONVOLUTION", "DATA", "DROPOUT",
        "EUCLIDEAN_LOSS", "FLATTEN", "HDF5_DATA", "HDF5_OUTPUT", "IM2COL", "IMAGE_DATA",
        "INFOGAIN_LOSS", "INNER_PRODUCT", "LRN", "MULTINOMIAL_LOGISTIC_LOSS", "POOLING",
        "RELU", "SIGMOID", "SOFTMAX", "SOFTMAX_LOSS", "SPLIT", "TANH", "WINDOW_DATA",
        "ELTWISE", "POWER", "SIGMOID_CROSS_ENTROPY_LOSS", "HINGE_LOSS", "MEMORY_DATA",
        "ARGMAX", "THRESHOLD", "DUMMY_DATA", "SLICE", "MVN", "ABSVAL", "SILENCE",
        "CONTRASTIVE_LOSS", "EXP", "DECONVOLUTION"]),
        ("DimCheckMode", ["STRICT", "PERMISSIVE"])],
}

# V1 LayerType enum value -> V2 type string (Caffe's UpgradeV1LayerType).
V1_TYPES: dict[str, str] = {
    "NONE": "", "ACCURACY": "Accuracy", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONVOLUTION": "Convolution", "DATA": "Data", "DROPOUT": "Dropout",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "POOLING": "Pooling",
    "RELU": "ReLU", "SIGMOID": "Sigmoid", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "ELTWISE": "Eltwise", "POWER": "Power",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "HINGE_LOSS": "HingeLoss",
    "MEMORY_DATA": "MemoryData", "ARGMAX": "ArgMax", "THRESHOLD": "Threshold",
    "DUMMY_DATA": "DummyData", "SLICE": "Slice", "MVN": "MVN", "ABSVAL": "AbsVal",
    "SILENCE": "Silence", "CONTRASTIVE_LOSS": "ContrastiveLoss", "EXP": "Exp",
    "DECONVOLUTION": "Deconvolution",
}

Field = tuple[str, int, str, str, Any]

_MESSAGES: dict[str, list[Field]] = {
    "BlobShape": [("dim", 1, "p", "int64", None)],
    "BlobProto": [
        ("shape", 7, "o", "BlobShape", None),
        ("data", 5, "p", "float", None), ("diff", 6, "p", "float", None),
        ("double_data", 8, "p", "double", None), ("double_diff", 9, "p", "double", None),
        ("raw_data_type", 10, "o", "DataType", None), ("raw_data", 12, "o", "bytes", None),
        ("num", 1, "o", "int32", 0), ("channels", 2, "o", "int32", 0),
        ("height", 3, "o", "int32", 0), ("width", 4, "o", "int32", 0),
    ],
    "FillerParameter": [
        ("type", 1, "o", "string", "constant"), ("value", 2, "o", "float", 0),
        ("min", 3, "o", "float", 0), ("max", 4, "o", "float", 1),
        ("mean", 5, "o", "float", 0), ("std", 6, "o", "float", 1),
        ("sparse", 7, "o", "int32", -1), ("variance_norm", 8, "o", "VarianceNorm", "FAN_IN"),
    ],
    "NetState": [("phase", 1, "o", "Phase", "TEST"), ("level", 2, "o", "int32", 0),
                 ("stage", 3, "r", "string", None)],
    "NetStateRule": [("phase", 1, "o", "Phase", None), ("min_level", 2, "o", "int32", None),
                     ("max_level", 3, "o", "int32", None), ("stage", 4, "r", "string", None),
                     ("not_stage", 5, "r", "string", None)],
    "ParamSpec": [("name", 1, "o", "string", None),
                  ("share_mode", 2, "o", "DimCheckMode", None),
                  ("lr_mult", 3, "o", "float", 1), ("decay_mult", 4, "o", "float", 1)],
    "NetParameter": [
        ("name", 1, "o", "string", None), ("input", 3, "r", "string", None),
        ("input_shape", 8, "r", "BlobShape", None), ("input_dim", 4, "r", "int32", None),
        ("force_backward", 5, "o", "bool", False), ("state", 6, "o", "NetState", None),
        ("debug_info", 7, "o", "bool", False), ("layer", 100, "r", "LayerParameter", None),
        ("layers", 2, "r", "V1LayerParameter", None),
    ],
    "TransformationParameter": [
        ("scale", 1, "o", "float", 1), ("mirror", 2, "o", "bool", False),
        ("crop_size", 3, "o", "uint32", 0), ("mean_file", 4, "o", "string", None),
        ("mean_value", 5, "r", "float", None), ("force_color", 6, "o", "bool", False),
        ("force_gray", 7, "o", "bool", False),
    ],
    "ArgMaxParameter": [("out_max_val", 1, "o", "bool", False),
                        ("top_k", 2, "o", "uint32", 1), ("axis", 3, "o", "int32", None)],
    "BatchNormParameter": [("use_global_stats", 1, "o", "bool", None),
                           ("moving_average_fraction", 2, "o", "float", 0.999),
                           ("eps", 3, "o", "float", 1e-5)],
    "BiasParameter": [("axis", 1, "o", "int32", 1), ("num_axes", 2, "o", "int32", 1),
                      ("filler", 3, "o", "FillerParameter", None)],
    "ConcatParameter": [("axis", 2, "o", "int32", 1), ("concat_dim", 1, "o", "uint32", 1)],
    "ConvolutionParameter": [
        ("num_output", 1, "o", "uint32", None), ("bias_term", 2, "o", "bool", True),
        ("pad", 3, "r", "uint32", None), ("kernel_size", 4, "r", "uint32", None),
        ("stride", 6, "r", "uint32", None), ("dilation", 18, "r", "uint32", None),
        ("pad_h", 9, "o", "uint32", 0), ("pad_w", 10, "o", "uint32", 0),
        ("kernel_h", 11, "o", "uint32", None), ("kernel_w", 12, "o", "uint32", None),
        ("stride_h", 13, "o", "uint32", None), ("stride_w", 14, "o", "uint32", None),
        ("group", 5, "o", "uint32", 1), ("weight_filler", 7, "o", "FillerParameter", None),
        ("bias_filler", 8, "o", "FillerParameter", None),
        ("engine", 15, "o", "Engine", "DEFAULT"), ("axis", 16, "o", "int32", 1),
        ("force_nd_im2col", 17, "o", "bool", False),
    ],
    "CropParameter": [("axis", 1, "o", "int32", 2), ("offset", 2, "r", "uint32", None)],
    "DropoutParameter": [("dropout_ratio", 1, "o", "float", 0.5),
                         ("scale_train", 2, "o", "bool", True)],
    "EltwiseParameter": [("operation", 1, "o", "EltwiseOp", "SUM"),
                         ("coeff", 2, "r", "float", None),
                         ("stable_prod_grad", 3, "o", "bool", True)],
    "ELUParameter": [("alpha", 1, "o", "float", 1)],
    "ExpParameter": [("base", 1, "o", "float", -1), ("scale", 2, "o", "float", 1),
                     ("shift", 3, "o", "float", 0)],
    "FlattenParameter": [("axis", 1, "o", "int32", 1), ("end_axis", 2, "o", "int32", -1)],
    "InnerProductParameter": [
        ("num_output", 1, "o", "uint32", None), ("bias_term", 2, "o", "bool", True),
        ("weight_filler", 3, "o", "FillerParameter", None),
        ("bias_filler", 4, "o", "FillerParameter", None),
        ("axis", 5, "o", "int32", 1), ("transpose", 6, "o", "bool", False),
    ],
    "InputParameter": [("shape", 1, "r", "BlobShape", None)],
    "LogParameter": [("base", 1, "o", "float", -1), ("scale", 2, "o", "float", 1),
                     ("shift", 3, "o", "float", 0)],
    "LRNParameter": [
        ("local_size", 1, "o", "uint32", 5), ("alpha", 2, "o", "float", 1),
        ("beta", 3, "o", "float", 0.75),
        ("norm_region", 4, "o", "NormRegion", "ACROSS_CHANNELS"),
        ("k", 5, "o", "float", 1), ("engine", 6, "o", "Engine", "DEFAULT"),
    ],
    "PoolingParameter": [
        ("pool", 1, "o", "PoolMethod", "MAX"), ("pad", 4, "o", "uint32", 0),
        ("pad_h", 9, "o", "uint32", 0), ("pad_w", 10, "o", "uint32", 0),
        ("kernel_size", 2, "o", "uint32", None), ("kernel_h", 5, "o", "uint32", None),
        ("kernel_w", 6, "o", "uint32", None), ("stride", 3, "o", "uint32", 1),
        ("stride_h", 7, "o", "uint32", None), ("stride_w", 8, "o", "uint32", None),
        ("engine", 11, "o", "Engine", "DEFAULT"),
        ("global_pooling", 12, "o", "bool", False),
        ("round_mode", 13, "o", "RoundMode", "CEIL"),  # replaced in the ceil_mode variant
    ],
    "PowerParameter": [("power", 1, "o", "float", 1), ("scale", 2, "o", "float", 1),
                       ("shift", 3, "o", "float", 0)],
    "PReLUParameter": [("filler", 1, "o", "FillerParameter", None),
                       ("channel_shared", 2, "o", "bool", False)],
    "ReLUParameter": [("negative_slope", 1, "o", "float", 0),
                      ("engine", 2, "o", "Engine", "DEFAULT")],
    "ReshapeParameter": [("shape", 1, "o", "BlobShape", None), ("axis", 2, "o", "int32", 0),
                         ("num_axes", 3, "o", "int32", -1)],
    "ScaleParameter": [("axis", 1, "o", "int32", 1), ("num_axes", 2, "o", "int32", 1),
                       ("filler", 3, "o", "FillerParameter", None),
                       ("bias_term", 4, "o", "bool", False),
                       ("bias_filler", 5, "o", "FillerParameter", None)],
    "SigmoidParameter": [("engine", 1, "o", "Engine", "DEFAULT")],
    "SliceParameter": [("axis", 3, "o", "int32", 1), ("slice_point", 2, "r", "uint32", None),
                       ("slice_dim", 1, "o", "uint32", 1)],
    "SoftmaxParameter": [("engine", 1, "o", "Engine", "DEFAULT"),
                         ("axis", 2, "o", "int32", 1)],
    "TanHParameter": [("engine", 1, "o", "Engine", "DEFAULT")],
    "ThresholdParameter": [("threshold", 1, "o", "float", 0)],
    "MVNParameter": [("normalize_variance", 1, "o", "bool", True),
                     ("across_channels", 2, "o", "bool", False),
                     ("eps", 3, "o", "float", 1e-9)],
    "ReductionParameter": [("operation", 1, "o", "ReductionOp", "SUM"),
                           ("axis", 2, "o", "int32", 0), ("coeff", 3, "o", "float", 1)],
    "TileParameter": [("axis", 1, "o", "int32", 1), ("tiles", 2, "o", "int32", None)],
    # Fork layers. SSD (weiliu89/caffe, branch ssd): Permute, Normalize, PriorBox,
    # DetectionOutput; PriorBox's offset_h..height are OpenCV's additions.
    "PermuteParameter": [("order", 1, "r", "uint32", None)],
    "NormalizeParameter": [("across_spatial", 1, "o", "bool", True),
                           ("scale_filler", 2, "o", "FillerParameter", None),
                           ("channel_shared", 3, "o", "bool", True),
                           ("eps", 4, "o", "float", 1e-10)],
    "PriorBoxParameter": [
        ("min_size", 1, "r", "float", None), ("max_size", 2, "r", "float", None),
        ("aspect_ratio", 3, "r", "float", None), ("flip", 4, "o", "bool", True),
        ("clip", 5, "o", "bool", False), ("variance", 6, "r", "float", None),
        ("img_size", 7, "o", "uint32", None), ("img_h", 8, "o", "uint32", None),
        ("img_w", 9, "o", "uint32", None), ("step", 10, "o", "float", None),
        ("step_h", 11, "o", "float", None), ("step_w", 12, "o", "float", None),
        ("offset", 13, "o", "float", 0.5), ("offset_h", 14, "r", "float", None),
        ("offset_w", 15, "r", "float", None), ("width", 16, "r", "float", None),
        ("height", 17, "r", "float", None),
    ],
    "NonMaximumSuppressionParameter": [("nms_threshold", 1, "o", "float", 0.3),
                                       ("top_k", 2, "o", "int32", None),
                                       ("eta", 3, "o", "float", 1)],
    "ResizeParameter": [
        ("prob", 1, "o", "float", 1), ("resize_mode", 2, "o", "Resize_mode", "WARP"),
        ("height", 3, "o", "uint32", 0), ("width", 4, "o", "uint32", 0),
        ("height_scale", 8, "o", "uint32", 0), ("width_scale", 9, "o", "uint32", 0),
        ("pad_mode", 5, "o", "Pad_mode", "CONSTANT"), ("pad_value", 6, "r", "float", None),
        ("interp_mode", 7, "r", "Interp_mode", None),
    ],
    "SaveOutputParameter": [
        ("output_directory", 1, "o", "string", None),
        ("output_name_prefix", 2, "o", "string", None),
        ("output_format", 3, "o", "string", None), ("label_map_file", 4, "o", "string", None),
        ("name_size_file", 5, "o", "string", None), ("num_test_image", 6, "o", "uint32", None),
        ("resize_param", 7, "o", "ResizeParameter", None),
    ],
    "DetectionOutputParameter": [
        ("num_classes", 1, "o", "uint32", None), ("share_location", 2, "o", "bool", True),
        ("background_label_id", 3, "o", "int32", 0),
        ("nms_param", 4, "o", "NonMaximumSuppressionParameter", None),
        ("save_output_param", 5, "o", "SaveOutputParameter", None),
        ("code_type", 6, "o", "PriorBoxParameter.CodeType", "CORNER"),
        ("variance_encoded_in_target", 8, "o", "bool", False),
        ("keep_top_k", 7, "o", "int32", -1), ("confidence_threshold", 9, "o", "float", None),
        ("visualize", 10, "o", "bool", False), ("visualize_threshold", 11, "o", "float", None),
        ("save_file", 12, "o", "string", None),
    ],
    # ShuffleNet's ShuffleChannel; DeepLab/PSPNet's Interp (their field number 143 clashes
    # with BVLC's input_param: the binary form of interp_param is not decoded).
    "ShuffleChannelParameter": [("group", 1, "o", "uint32", 1)],
    "ReorgParameter": [("stride", 1, "o", "uint32", None), ("reverse", 2, "o", "bool", False)],
    "InterpParameter": [("height", 1, "o", "int32", 0), ("width", 2, "o", "int32", 0),
                        ("zoom_factor", 3, "o", "int32", 1),
                        ("shrink_factor", 4, "o", "int32", 1),
                        ("pad_beg", 5, "o", "int32", 0), ("pad_end", 6, "o", "int32", 0)],
}

# Layer param fields: (field name, message type, V2 number, V1 number or None)
_LAYER_PARAMS: list[tuple[str, str, int, int | None]] = [
    ("transform_param", "TransformationParameter", 100, 36),
    ("argmax_param", "ArgMaxParameter", 103, 23),
    ("batch_norm_param", "BatchNormParameter", 139, None),
    ("bias_param", "BiasParameter", 141, None),
    ("concat_param", "ConcatParameter", 104, 9),
    ("convolution_param", "ConvolutionParameter", 106, 10),
    ("crop_param", "CropParameter", 144, None),
    ("dropout_param", "DropoutParameter", 108, 12),
    ("eltwise_param", "EltwiseParameter", 110, 24),
    ("elu_param", "ELUParameter", 140, None),
    ("exp_param", "ExpParameter", 111, 41),
    ("flatten_param", "FlattenParameter", 135, None),
    ("inner_product_param", "InnerProductParameter", 117, 17),
    ("input_param", "InputParameter", 143, None),
    ("log_param", "LogParameter", 134, None),
    ("lrn_param", "LRNParameter", 118, 18),
    ("pooling_param", "PoolingParameter", 121, 19),
    ("power_param", "PowerParameter", 122, 21),
    ("prelu_param", "PReLUParameter", 131, None),
    ("relu_param", "ReLUParameter", 123, 30),
    ("reshape_param", "ReshapeParameter", 133, None),
    ("scale_param", "ScaleParameter", 142, None),
    ("sigmoid_param", "SigmoidParameter", 124, 38),
    ("slice_param", "SliceParameter", 126, 31),
    ("softmax_param", "SoftmaxParameter", 125, 39),
    ("tanh_param", "TanHParameter", 127, 37),
    ("threshold_param", "ThresholdParameter", 128, 25),
    ("mvn_param", "MVNParameter", 120, 34),
    ("reduction_param", "ReductionParameter", 136, None),
    ("tile_param", "TileParameter", 138, None),
    ("permute_param", "PermuteParameter", 202, None),
    ("prior_box_param", "PriorBoxParameter", 203, None),
    ("detection_output_param", "DetectionOutputParameter", 204, None),
    ("norm_param", "NormalizeParameter", 206, None),
    ("shuffle_channel_param", "ShuffleChannelParameter", 164, None),
    ("reorg_param", "ReorgParameter", 159, None),
    ("interp_param", "InterpParameter", 2143, None),
]

_MESSAGES["LayerParameter"] = [
    ("name", 1, "o", "string", None), ("type", 2, "o", "string", None),
    ("bottom", 3, "r", "string", None), ("top", 4, "r", "string", None),
    ("phase", 10, "o", "Phase", None), ("loss_weight", 5, "r", "float", None),
    ("param", 6, "r", "ParamSpec", None), ("blobs", 7, "r", "BlobProto", None),
    ("propagate_down", 11, "r", "bool", None),
    ("include", 8, "r", "NetStateRule", None), ("exclude", 9, "r", "NetStateRule", None),
] + [(name, number, "o", msg, None) for name, msg, number, _ in _LAYER_PARAMS]

_MESSAGES["V1LayerParameter"] = [
    ("bottom", 2, "r", "string", None), ("top", 3, "r", "string", None),
    ("name", 4, "o", "string", None), ("include", 32, "r", "NetStateRule", None),
    ("exclude", 33, "r", "NetStateRule", None), ("type", 5, "o", "LayerType", None),
    ("blobs", 6, "r", "BlobProto", None), ("param", 1001, "r", "string", None),
    ("blob_share_mode", 1002, "r", "DimCheckMode", None),
    ("blobs_lr", 7, "r", "float", None), ("weight_decay", 8, "r", "float", None),
    ("loss_weight", 35, "r", "float", None),
] + [(name, v1, "o", msg, None) for name, msg, _, v1 in _LAYER_PARAMS if v1 is not None]

_SCALARS = {
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}


def _fields(message: str, ceil_mode: bool) -> list[Field]:
    fields = _MESSAGES[message]
    if message == "PoolingParameter" and ceil_mode:
        fields = [f for f in fields if f[1] != 13] + [("ceil_mode", 13, "o", "bool", True)]
    return fields


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _enum_values(values: EnumValues) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for i, v in enumerate(values):
        out.append((v, i) if isinstance(v, str) else (str(v[0]), int(v[1])))
    return out


def _is_enum(message: str, type_: str) -> bool:
    if "." in type_:  # Message.Enum
        outer, inner = type_.split(".")
        return inner in [n for n, _ in _NESTED_ENUMS.get(outer, [])]
    return type_ in _ENUMS or type_ in [n for n, _ in _NESTED_ENUMS.get(message, [])]


def _type_name(message: str, type_: str) -> str:
    nested = [name for name, _ in _NESTED_ENUMS.get(message, [])]
    if type_ in nested:
        return f".{PACKAGE}.{message}.{type_}"
    return f".{PACKAGE}.{type_}"


def _add_field(msg: descriptor_pb2.DescriptorProto, message: str, field: Field) -> None:
    FDP = descriptor_pb2.FieldDescriptorProto
    name, number, label, type_, default = field
    f = msg.field.add(name=name, number=number)
    f.label = FDP.LABEL_OPTIONAL if label == "o" else FDP.LABEL_REPEATED
    if type_ in _SCALARS:
        f.type = _SCALARS[type_]
    else:
        f.type = FDP.TYPE_ENUM if _is_enum(message, type_) else FDP.TYPE_MESSAGE
        f.type_name = _type_name(message, type_)
    if label == "p":
        f.options.packed = True
    if default is not None and label == "o":
        f.default_value = _default_text(default)


def _file_proto(ceil_mode: bool) -> descriptor_pb2.FileDescriptorProto:
    suffix = "ceil" if ceil_mode else "round"
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"repurpose_caffe_{suffix}.proto", package=PACKAGE, syntax="proto2"
    )
    for name, values in _ENUMS.items():
        enum = fdp.enum_type.add(name=name)
        for i, v in enumerate(values):
            enum.value.add(name=v, number=i)
    for message in _MESSAGES:
        msg = fdp.message_type.add(name=message)
        for enum_name, nested in _NESTED_ENUMS.get(message, []):
            enum = msg.enum_type.add(name=enum_name)
            for v, i in _enum_values(nested):
                enum.value.add(name=v, number=i)
        for field in _fields(message, ceil_mode):
            _add_field(msg, message, field)
    return fdp


@lru_cache(maxsize=2)
def _pool(ceil_mode: bool) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_proto(ceil_mode))
    return pool


def message_class(name: str, ceil_mode: bool = False) -> Any:
    """The generated message class ``caffe.<name>`` of one schema variant."""
    descriptor = _pool(ceil_mode).FindMessageTypeByName(f"{PACKAGE}.{name}")
    return message_factory.GetMessageClass(descriptor)


def net_class(ceil_mode: bool = False) -> Any:
    """``caffe.NetParameter``; ``ceil_mode=True`` selects the OpenCV-style pooling field 13."""
    return message_class("NetParameter", ceil_mode)


def blob_class() -> Any:
    """``caffe.BlobProto`` (used for ``.binaryproto`` mean files)."""
    return message_class("BlobProto")


def schema_text(ceil_mode: bool = False) -> str:
    """The schema as ``.proto`` text (``caffe_subset.proto`` is this, committed)."""
    lines = ['syntax = "proto2";', f"package {PACKAGE};", ""]
    labels = {"o": "optional", "r": "repeated", "p": "repeated"}
    for name, values in _ENUMS.items():
        lines += [f"enum {name} {{"] + [f"  {v} = {i};" for i, v in enumerate(values)] + ["}"]
    for message in _MESSAGES:
        lines.append(f"message {message} {{")
        for enum_name, nested in _NESTED_ENUMS.get(message, []):
            lines += [f"  enum {enum_name} {{"]
            lines += [f"    {v} = {i};" for v, i in _enum_values(nested)] + ["  }"]
        for fname, number, label, type_, default in _fields(message, ceil_mode):
            opts = []
            if label == "p":
                opts.append("packed = true")
            if default is not None and label == "o":
                opts.append(f"default = {_default_text(default)}")
            opt = f" [{', '.join(opts)}]" if opts else ""
            lines.append(f"  {labels[label]} {type_} {fname} = {number}{opt};")
        lines.append("}")
    return "\n".join(lines) + "\n"
