"""Repurposers: turn a source network into a classifier for a new task.

See :mod:`repurpose.repurposers._base` for the hooks a custom repurposer implements.
"""

from repurpose.repurposers._augment import RandomResizedCropFlip
from repurpose.repurposers._auto import AutoRepurposer
from repurpose.repurposers._base import MetaModelRepurposer, Repurposer
from repurpose.repurposers._bnn import BNNRepurposer
from repurpose.repurposers._calibration import TemperatureScaledRepurposer, calibrate
from repurpose.repurposers._ensemble import EnsembleRepurposer
from repurpose.repurposers._finetune import FineTuneRepurposer
from repurpose.repurposers._gated import GatedRepurposer
from repurpose.repurposers._gated_experts import GatedExpertsRepurposer
from repurpose.repurposers._gp import GPRepurposer
from repurpose.repurposers._head2toe import Head2ToeRepurposer
from repurpose.repurposers._io import (
    arrays_to_module_state,
    load,
    module_state_to_arrays,
)
from repurpose.repurposers._lr import LogisticRegressionRepurposer
from repurpose.repurposers._mlp import MLPRepurposer
from repurpose.repurposers._random_freeze import RandomFreezeRepurposer
from repurpose.repurposers._registry import (
    get_repurposer_class,
    list_repurposers,
    register_repurposer,
)
from repurpose.repurposers._svm import SVMRepurposer

__all__ = [
    "Repurposer",
    "MetaModelRepurposer",
    "register_repurposer",
    "list_repurposers",
    "get_repurposer_class",
    "load",
    "module_state_to_arrays",
    "arrays_to_module_state",
    "LogisticRegressionRepurposer",
    "SVMRepurposer",
    "MLPRepurposer",
    "FineTuneRepurposer",
    "RandomFreezeRepurposer",
    "GatedRepurposer",
    "GatedExpertsRepurposer",
    "Head2ToeRepurposer",
    "EnsembleRepurposer",
    "GPRepurposer",
    "BNNRepurposer",
    "TemperatureScaledRepurposer",
    "calibrate",
    "AutoRepurposer",
    "RandomResizedCropFlip",
]
