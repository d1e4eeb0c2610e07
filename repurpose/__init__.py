"""repurpose: turn trained networks (Caffe, MXNet, PyTorch) into models for new tasks.

>>> import repurpose as rp
>>> {"lr", "auto"} <= set(rp.list_repurposers())
True
"""

from repurpose import caffe, datasets, graph, metrics, mxnet, onnx, plot, transferability
from repurpose._exceptions import (
    LayerNotFoundError,
    ModelFormatError,
    NotFittedError,
    RandomWeightsWarning,
    RepurposeError,
    SurgeryError,
    UnsafeFileError,
    UnsupportedLayerError,
)
from repurpose._imported import ImportedModel
from repurpose._preprocess import Preprocess
from repurpose._version import __version__
from repurpose.model_handler import ModelHandler, merge_features
from repurpose.repurposers import (
    AutoRepurposer,
    BNNRepurposer,
    EnsembleRepurposer,
    FineTuneRepurposer,
    GatedExpertsRepurposer,
    GatedRepurposer,
    GPRepurposer,
    Head2ToeRepurposer,
    LogisticRegressionRepurposer,
    MetaModelRepurposer,
    MLPRepurposer,
    RandomFreezeRepurposer,
    RandomResizedCropFlip,
    Repurposer,
    SVMRepurposer,
    TemperatureScaledRepurposer,
    calibrate,
    list_repurposers,
    load,
    register_repurposer,
)
from repurpose.transferability import rank_sources

__all__ = [
    "__version__",
    # the network
    "ModelHandler",
    "Preprocess",
    "ImportedModel",
    "merge_features",
    # repurposers
    "Repurposer",
    "MetaModelRepurposer",
    "LogisticRegressionRepurposer",
    "SVMRepurposer",
    "MLPRepurposer",
    "GPRepurposer",
    "BNNRepurposer",
    "FineTuneRepurposer",
    "RandomFreezeRepurposer",
    "GatedRepurposer",
    "GatedExpertsRepurposer",
    "Head2ToeRepurposer",
    "EnsembleRepurposer",
    "TemperatureScaledRepurposer",
    "AutoRepurposer",
    "RandomResizedCropFlip",
    "rank_sources",
    "register_repurposer",
    "list_repurposers",
    "load",
    "calibrate",
    # subpackages
    "caffe",
    "datasets",
    "graph",
    "metrics",
    "mxnet",
    "onnx",
    "plot",
    "transferability",
    # errors
    "LayerNotFoundError",
    "ModelFormatError",
    "NotFittedError",
    "RandomWeightsWarning",
    "RepurposeError",
    "SurgeryError",
    "UnsafeFileError",
    "UnsupportedLayerError",
]
