"""Extract features from several layers of a small CNN and compare them for a new task.

A small CNN is trained on scikit-learn's digits 0-4 (the "source" task). A ModelHandler
then reads three of its layers in one pass over digits 5-9 (the "target" task), and a
logistic regression trained on each layer's features shows how well that layer transfers.
It also prints the layer table, cuts the network, and streams features to disk.

Run from the repository root: ``python examples/extract_features.py``
(``REPURPOSE_SMOKE=1`` shrinks it to a few seconds).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from repurpose import ModelHandler

SMOKE = os.environ.get("REPURPOSE_SMOKE") == "1"


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 0 conv1, 1, 2
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 3 conv2, 4, 5
        nn.Flatten(),                                                # 6
        nn.Linear(16 * 2 * 2, 32), nn.ReLU(),                        # 7 fc6, 8
        nn.Linear(32, 32), nn.ReLU(),                                # 9 fc7, 10
        nn.Linear(32, 5),                                            # 11 fc8
    )


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = digits.target
    source = y < 5

    net = small_cnn()
    train(net, x[source], y[source], epochs=2 if SMOKE else 15)

    handler = ModelHandler(net, input_shape=(1, 8, 8))
    print(handler.summary())

    # Digits 5-9 were never seen. Read three layers in one forward pass per batch.
    layers = ["3", "7", "9"]  # conv2, fc6, fc7
    names = {"3": "conv2 (avg-pooled)", "7": "fc6", "9": "fc7"}
    xt, yt = x[~source], y[~source]
    if SMOKE:
        xt, yt = xt[:200], yt[:200]
    feats = handler.extract(xt, layers, pooling="avg", batch_size=128, progress=not SMOKE)
    idx_train, idx_test = train_test_split(np.arange(len(yt)), train_size=0.3,
                                           random_state=0, stratify=yt)
    for layer in layers:
        f = feats[layer]
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(f[idx_train], yt[idx_train])
        acc = clf.score(f[idx_test], yt[idx_test])
        print(f"{names[layer]:>20}: {f.shape[1]:3d} features, accuracy on digits 5-9 = {acc:.3f}")

    # Keep the network up to fc7 only, and stream its features to disk (memory-mapped).
    body = handler.truncate("10")
    print("truncated network ends with:", body.layer_names[-3:])
    with tempfile.TemporaryDirectory() as out:
        disk = body.extract(xt, ["10"], batch_size=64, progress=False, out=out)
        print("features on disk:", sorted(os.listdir(out)), disk["10"].shape)


if __name__ == "__main__":
    main()
