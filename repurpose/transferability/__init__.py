"""Transferability estimates: how well a source representation suits a target task.

Scores on arrays (:func:`score`, :func:`logme`, :func:`hscore`, :func:`leep`, :func:`nce`)
and rankings of a network's layers or of candidate networks from one forward pass
(:func:`rank_layers`, :func:`rank_sources`). Higher scores mean more transferable.

>>> from repurpose import transferability
>>> transferability.METHODS
('logme', 'hscore', 'leep', 'nce')
"""

from repurpose.transferability._rank import (
    LayerScore,
    Ranking,
    probe_layers,
    prune_probes,
    rank_features,
    rank_layers,
    rank_sources,
)
from repurpose.transferability._scores import (
    METHODS,
    LogMEFit,
    hscore,
    leep,
    logme,
    logme_fit,
    nce,
    score,
)

__all__ = [
    "METHODS",
    "score",
    "logme",
    "logme_fit",
    "LogMEFit",
    "hscore",
    "leep",
    "nce",
    "rank_features",
    "rank_layers",
    "rank_sources",
    "probe_layers",
    "prune_probes",
    "LayerScore",
    "Ranking",
]
