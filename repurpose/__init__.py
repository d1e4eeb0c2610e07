"""repurpose: turn trained networks (Caffe, MXNet, PyTorch) into models for new tasks.

Each section below belongs to one part of the library. Keep edits inside your section.
"""

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
from repurpose import graph

# --- model_handler section ---
from repurpose.model_handler import ModelHandler, Preprocess
# --- repurposers section ---
from repurpose.repurposers import (
    LogisticRegressionRepurposer,
    MetaModelRepurposer,
    MLPRepurposer,
    Repurposer,
    SVMRepurposer,
    list_repurposers,
    load,
    register_repurposer,
)
from repurpose import datasets
from repurpose.repurposers import (
    EnsembleRepurposer,
    FineTuneRepurposer,
    GatedRepurposer,
    RandomFreezeRepurposer,
)
from repurpose.repurposers import BNNRepurposer, GPRepurposer
from repurpose import metrics
from repurpose._calibration import calibrate
# --- caffe section ---
from repurpose import caffe
# --- mxnet section ---
from repurpose import mxnet

__all__ = [
    "__version__",
    "graph",
    "LayerNotFoundError",
    "ModelFormatError",
    "NotFittedError",
    "RepurposeError",
    "SurgeryError",
    "UnsafeFileError",
    "UnsupportedLayerError",
    # --- model_handler names ---
    "ModelHandler",
    "Preprocess",
    # --- repurposers names ---
    "Repurposer",
    "MetaModelRepurposer",
    "LogisticRegressionRepurposer",
    "SVMRepurposer",
    "MLPRepurposer",
    "FineTuneRepurposer",
    "RandomFreezeRepurposer",
    "GatedRepurposer",
    "EnsembleRepurposer",
    "register_repurposer",
    "list_repurposers",
    "load",
    "datasets",
    "GPRepurposer",
    "BNNRepurposer",
    "calibrate",
    "metrics",
    # --- caffe names ---
    "caffe",
    # --- mxnet names ---
    "mxnet",
]
