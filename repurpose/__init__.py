"""repurpose: turn trained networks (Caffe, MXNet, PyTorch) into models for new tasks.

>>> import repurpose as rp
>>> sorted(rp.list_repurposers())[:3]
['bnn', 'ensemble', 'finetune']
"""

from repurpose import caffe, datasets, graph, metrics, mxnet, plot
from repurpose._calibration import TemperatureScaledRepurposer, calibrate
from repurpose._exceptions import (
    LayerNotFoundError,
    ModelFormatError,
    NotFittedError,
    RepurposeError,
    SurgeryError,
    UnsafeFileError,
    UnsupportedLayerError,
)
from repurpose._version import __version__
from repurpose.model_handler import ModelHandler, Preprocess
from repurpose.repurposers import (
    BNNRepurposer,
    EnsembleRepurposer,
    FineTuneRepurposer,
    GatedRepurposer,
    GPRepurposer,
    Head2ToeRepurposer,
    LogisticRegressionRepurposer,
    MetaModelRepurposer,
    MLPRepurposer,
    RandomFreezeRepurposer,
    Repurposer,
    SVMRepurposer,
    list_repurposers,
    load,
    register_repurposer,
)

__all__ = [
    "__version__",
    # the network
    "ModelHandler",
    "Preprocess",
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
    "Head2ToeRepurposer",
    "EnsembleRepurposer",
    "TemperatureScaledRepurposer",
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
    "plot",
    # errors
    "LayerNotFoundError",
    "ModelFormatError",
    "NotFittedError",
    "RepurposeError",
    "SurgeryError",
    "UnsafeFileError",
    "UnsupportedLayerError",
]
