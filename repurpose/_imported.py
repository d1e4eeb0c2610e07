"""What every importer returns: :class:`ImportedModel`, a graph and its preprocessing.

Importers (``repurpose.caffe``, ``repurpose.mxnet``) build a :class:`~repurpose.graph.GraphNet`
and, when the source format records it, the :class:`~repurpose.Preprocess` its inputs need.
They stop there: wrapping the result in a :class:`~repurpose.ModelHandler` is the handler's
job (:meth:`repurpose.ModelHandler.from_imported`), so no importer depends on the handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from repurpose._preprocess import Preprocess
from repurpose.graph import GraphNet

__all__ = ["ImportedModel"]


@dataclass(frozen=True)
class ImportedModel:
    """An imported network and how to prepare its inputs.

    Attributes
    ----------
    net : GraphNet
        The network, in eval mode; layer names are the source framework's layer names.
    preprocess : Preprocess or None
        How images become inputs, when the source format says (Caffe mean, channel order
        and scales); None otherwise.

    Examples
    --------
    >>> import torch
    >>> import repurpose as rp
    >>> from repurpose.graph import GraphNet, Node
    >>> net = GraphNet([Node("relu", "relu", ("data",), ("out",))], ["data"], ["out"],
    ...                {"data": [1, 3, 4, 4]})
    >>> model = rp.ImportedModel(net, rp.Preprocess(channel_order="BGR"))
    >>> model.input_shape
    (3, 4, 4)
    >>> rp.ModelHandler.from_imported(model).layer_names
    ['relu']
    """

    net: GraphNet
    preprocess: Preprocess | None = None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one input without the batch axis, when the graph declares it."""
        shapes = self.net.input_shapes
        if not self.net.input_names or self.net.input_names[0] not in shapes:
            return None
        return tuple(shapes[self.net.input_names[0]][1:])
