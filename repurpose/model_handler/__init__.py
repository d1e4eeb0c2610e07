"""Wrap, inspect, edit and read trained networks: :class:`ModelHandler` and its helpers."""

from repurpose._preprocess import Preprocess
from repurpose.model_handler._data import ImageFolder, as_batches
from repurpose.model_handler._handler import ModelHandler
from repurpose.model_handler._shards import merge_features
from repurpose.model_handler._summary import Summary, SummaryRow

__all__ = ["ModelHandler", "Preprocess", "ImageFolder", "Summary", "SummaryRow", "as_batches",
           "merge_features"]
