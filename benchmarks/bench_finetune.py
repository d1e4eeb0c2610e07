"""Training throughput of FineTuneRepurposer against a minimal hand-written torch loop.

Both train the same ResNet-18-shaped network (written below; no torchvision), cut at
``avgpool`` with a new linear head, on the same 64x64 inputs and batches, with AdamW and
the same number of steps, in the same process. Also compares the step time with the body
frozen against the step time fully unfrozen: frozen layers have ``requires_grad=False``,
so autograd runs no backward through them.

Prints JSON. ``--quick`` uses tiny sizes (a smoke test, a few seconds).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import numpy as np
import torch
from torch import nn

import repurpose as rp


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    def __init__(self, width: int = 64, n_classes: int = 1000) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = w[0]
        for i, cout in enumerate(w):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}",
                    nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _Body(nn.Module):
    """The network up to avgpool, plus a new head: what the minimal loop trains."""

    def __init__(self, net: ResNet18, n_classes: int) -> None:
        super().__init__()
        self.net = copy.deepcopy(net)
        self.net.fc = nn.Identity()
        self.head = nn.Linear(net.fc.in_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


def minimal_loop(net: ResNet18, X: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
                 n_classes: int) -> tuple[float, float]:
    """Seconds for a bare AdamW loop over the same batches (whole run, epochs after the first)."""
    start = time.perf_counter()
    model = _Body(net, n_classes).train()  # copying the network, as the repurposer does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    first = start
    for epoch in range(epochs):
        if epoch == 1:
            first = time.perf_counter()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for idx in torch.split(order, batch):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
    end = time.perf_counter()
    return end - start, end - first


def repurposer_fit(handler: rp.ModelHandler, X: np.ndarray, y: np.ndarray, batch: int,
                   epochs: int, freeze: str | None) -> tuple[float, float]:
    """Seconds for FineTuneRepurposer.fit (whole run, and the epochs after the first)."""
    ends: list[float] = []
    rep = rp.FineTuneRepurposer(
        handler, transfer_layer="avgpool", freeze=freeze, max_epochs=epochs, batch_size=batch,
        validation_fraction=0.0, patience=None, schedule=None, optimizer="adamw",
        progress=False, random_state=0,
        callbacks=[lambda epoch, logs: ends.append(time.perf_counter())],
    )
    start = time.perf_counter()
    rep.fit(X, y)
    end = time.perf_counter()
    return end - start, ends[-1] - ends[0] if len(ends) > 1 else end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; --quick uses 1)")
    args = parser.parse_args()
    quick = args.quick
    threads = args.threads or (1 if quick else None)
    if threads:
        torch.set_num_threads(threads)
    width, size, n, batch, epochs = (8, 32, 32, 16, 2) if quick else (64, 64, 256, 32, 3)
    repeats = args.repeats or (1 if quick else 3)
    torch.manual_seed(0)
    net = ResNet18(width=width).eval()
    handler = rp.ModelHandler(net, input_shape=(1, 3, size, size))
    X = torch.randn(n, 3, size, size)
    y = torch.arange(n) % 4
    Xn, yn = X.numpy(), y.numpy()

    # Warm-up (allocator, kernels), then alternate the two so machine load hits both alike.
    minimal_loop(net, X[: 2 * batch], y[: 2 * batch], batch, 1, 4)
    repurposer_fit(handler, Xn[: 2 * batch], yn[: 2 * batch], batch, 1, None)
    bare, ours = [], []
    for _ in range(repeats):
        bare.append(minimal_loop(net, X, y, batch, epochs, 4))
        ours.append(repurposer_fit(handler, Xn, yn, batch, epochs, None))
    samples, later = n * epochs, n * (epochs - 1)
    steps = (epochs - 1) * int(np.ceil(n / batch))
    frozen_t = repurposer_fit(handler, Xn, yn, batch, epochs, "up_to:layer4.1.bn2")[1]
    full_t = min(t[1] for t in ours)
    bare_all, bare_later = min(t[0] for t in bare), min(t[1] for t in bare)
    ours_all, ours_later = min(t[0] for t in ours), full_t
    result = {
        "benchmark": "finetune",
        "quick": quick,
        "network": f"ResNet-18-shaped, width {width}, input {size}x{size}",
        "samples_per_epoch": n, "epochs": epochs, "batch_size": batch, "repeats": repeats,
        "threads": torch.get_num_threads(), "machine": platform.machine(),
        "minimal_loop_samples_per_s": samples / bare_all,
        "repurposer_samples_per_s": samples / ours_all,
        "throughput_ratio": bare_all / ours_all,
        "steady_state_minimal_samples_per_s": later / bare_later,
        "steady_state_repurposer_samples_per_s": later / ours_later,
        "steady_state_ratio": bare_later / ours_later,
        "target_ratio": 0.95,
        "step_time_frozen_body_s": frozen_t / steps,
        "step_time_unfrozen_s": full_t / steps,
        "frozen_over_unfrozen": frozen_t / full_t,
        "note": "best of `repeats` runs. throughput_ratio: whole runs (the repurposer's fit "
                "also traces and cuts the network, sizes the head and converts the data); "
                "steady_state_ratio: the epochs after the first. Step times: epochs after the "
                "first, per batch.",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
