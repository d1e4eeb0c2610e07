"""Test helper: build Caffe nets with protobuf and random weights, write prototxt/caffemodel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format, text_format

from repurpose.caffe import _schema


class NetWriter:
    """Accumulate layers; ``write(dir)`` gives (prototxt, caffemodel) paths.

    ``ceil_schema=True`` writes pooling rounding as ``ceil_mode`` (OpenCV's spelling).
    """

    def __init__(self, input_shape: Sequence[int] | None = (1, 3, 8, 8), *,
                 input_form: str = "input_dim", ceil_schema: bool = True, seed: int = 0,
                 input_name: str = "data") -> None:
        self.net = _schema.net_class(ceil_schema)()
        self.net.name = "test"
        self.rng = np.random.default_rng(seed)
        if input_shape is not None:
            self.add_input(input_name, input_shape, input_form)

    def add_input(self, name: str, shape: Sequence[int], form: str = "input_dim") -> None:
        if form == "input_dim":
            self.net.input.append(name)
            self.net.input_dim.extend(shape)
        elif form == "input_shape":
            self.net.input.append(name)
            self.net.input_shape.add().dim.extend(shape)
        elif form == "Input":
            self.layer(name, "Input", [], [name], input_param={"shape": [{"dim": list(shape)}]})
        else:
            raise ValueError(form)

    def layer(self, name: str, type_: str, bottom: Sequence[str], top: Sequence[str],
              blobs: Sequence[Any] = (), **params: Any) -> Any:
        layer = self.net.layer.add(name=name, type=type_)
        layer.bottom.extend(bottom)
        layer.top.extend(top)
        if params:
            json_format.ParseDict(params, layer)
        for b in blobs:
            arr = self.rng.standard_normal(b).astype(np.float32) if isinstance(b, tuple) \
                else np.asarray(b, dtype=np.float32)
            blob = layer.blobs.add()
            blob.shape.dim.extend(arr.shape)
            blob.data.extend(arr.ravel().tolist())
        return layer

    def write(self, directory: Path, stem: str = "net") -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        proto = directory / f"{stem}.prototxt"
        model = directory / f"{stem}.caffemodel"
        model.write_bytes(self.net.SerializeToString())
        deploy = type(self.net)()
        deploy.CopyFrom(self.net)
        for layer in deploy.layer:
            del layer.blobs[:]
        proto.write_text(text_format.MessageToString(deploy))
        return proto, model
