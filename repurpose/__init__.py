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
# --- repurposers section ---
# --- caffe section ---
# --- mxnet section ---

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
    # --- repurposers names ---
    # --- caffe names ---
    # --- mxnet names ---
]
