"""Beyond one machine: feature extraction and prediction on Ray Data.

``pip install 'repurpose[ray]'``. Sharded extraction without a cluster manager needs no extra:
``ModelHandler.extract(..., out=dir, shard=(index, count))`` and
:func:`repurpose.merge_features`.
"""

from repurpose.distributed._ray import extract, predict, predict_proba, read_image_folder

__all__ = ["extract", "predict", "predict_proba", "read_image_folder"]
