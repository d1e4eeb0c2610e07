"""Network repurposers under torchrun (DistributedDataParallel, gloo on the CPU).

One ``torchrun --nproc_per_node=2`` run (a subprocess) trains a small network in a few ways;
the tests compare what each rank saved with single-process runs made here with the same
global batch (2 processes x ``B`` against 1 process x ``2B``).

Tolerance: the two ranks hold bitwise identical weights (the same averaged gradients and the
same optimiser arithmetic). Against one process, the gradient of a global batch is summed in
a different order (each rank sums its half, then the all-reduce adds the halves), so float32
results differ in the last bits (about 1e-7 relative per step); over a few dozen SGD steps
that stays far below the ``rtol=1e-4`` allowed here, while a real difference (BatchNorm
statistics of half batches, a sample seen twice) is far above it. The runs use SGD: Adam
divides by the gradient's magnitude, so where the exact gradient is 0 (a convolution's bias
before BatchNorm) it turns rounding noise into full steps, and runs only agree loosely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import repurpose as rp
from repurpose._exceptions import RepurposeError
from repurpose.repurposers import _ddp
from repurpose.repurposers._checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
B = 8  # per-process batch in the torchrun run
RTOL, ATOL = 1e-4, 1e-6

COMMON = """
import numpy as np
import torch
from torch import nn

import repurpose as rp


def problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3),
                        nn.ReLU())
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 24)
    X = (rng.normal(size=(72, 3, 10, 10)) + 0.3 * y[:, None, None, None]).astype(np.float32)
    return rp.ModelHandler(net), X, y


def finetune(handler, batch_size, **kw):
    params = dict(max_epochs=3, optimizer="sgd", lr=0.05, random_state=0, progress=False,
                  validation_fraction=0.25, freeze=None)
    return rp.FineTuneRepurposer(handler, batch_size=batch_size, **{**params, **kw})


def gated(handler, batch_size, **kw):
    return rp.GatedRepurposer(handler, feature_layers=["2", "4"], end_to_end=True, dropout=0.0,
                              max_epochs=2, batch_size=batch_size, random_state=0,
                              validation_fraction=0.25, optimizer="sgd", lr=0.02,
                              progress=False, **kw)


class Stop(Exception):
    pass


def stop_after(epoch):
    def callback(e, logs):
        if e == epoch:
            raise Stop
    return callback


def weights(rep):
    return {k: v.detach().cpu().numpy() for k, v in rep.model_.state_dict().items()}
"""

SCRIPT = """
import sys
from pathlib import Path

import torch.distributed as dist

out = Path(sys.argv[1])
handler, X, y = problem()
runs = {
    "sync": finetune(handler, B, sync_batchnorm=True),
    "plain": finetune(handler, B),
    "gated": gated(handler, B, sync_batchnorm=True),
}
for name, rep in runs.items():
    rep.fit(X, y)
    np.savez(out / f"{name}-{dist.get_rank()}.npz", **weights(rep))
    np.save(out / f"{name}-loss-{dist.get_rank()}.npy", np.array(rep.history_["loss"]))
runs["sync"].save(out / "saved")
try:  # stopped after 2 of 4 epochs; the test resumes it in one process
    finetune(handler, B, sync_batchnorm=True, checkpoint_dir=out / "ckpt", max_epochs=4,
             callbacks=[stop_after(1)]).fit(X, y)
except Stop:
    pass
"""


def _module(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<ddp-script>", "exec"), namespace)  # the test's own code
    return namespace


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    script = out / "train.py"
    script.write_text(COMMON + f"\nB = {B}\n" + textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ns() -> dict:
    return _module(COMMON)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return dict(f)


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL, err_msg=k)


# ----- the torchrun run ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sync", "plain", "gated"])
def test_both_ranks_end_with_identical_weights(torchrun, name):
    w0, w1 = _load(torchrun / f"{name}-0.npz"), _load(torchrun / f"{name}-1.npz")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert np.array_equal(w0[k], w1[k]), k


@pytest.mark.slow
def test_two_processes_follow_one_process_with_the_global_batch(torchrun, ns):
    handler, X, y = ns["problem"]()
    single = ns["finetune"](handler, 2 * B).fit(X, y)
    np.testing.assert_allclose(np.load(torchrun / "sync-loss-0.npy"), single.history_["loss"],
                               rtol=RTOL)
    _close(_load(torchrun / "sync-0.npz"), ns["weights"](single))


@pytest.mark.slow
def test_gated_end_to_end_follows_one_process(torchrun, ns):
    handler, X, y = ns["problem"]()
    single = ns["gated"](handler, 2 * B).fit(X, y)
    assert single.sync_batchnorm is False  # the same in one process
    _close(_load(torchrun / "gated-0.npz"), ns["weights"](single))


@pytest.mark.slow
def test_without_sync_batchnorm_each_rank_normalises_its_half(torchrun, ns):
    handler, X, y = ns["problem"]()
    single = ns["weights"](ns["finetune"](handler, 2 * B).fit(X, y))
    plain = _load(torchrun / "plain-0.npz")
    assert any(not np.allclose(plain[k], single[k], rtol=RTOL, atol=ATOL) for k in plain)


@pytest.mark.slow
def test_the_save_under_torchrun_loads_with_the_trained_weights(torchrun):
    rep = rp.load(torchrun / "saved")
    saved = {k: v.numpy() for k, v in rep.model_.state_dict().items()}
    for k, v in _load(torchrun / "sync-0.npz").items():
        assert np.array_equal(saved[k], v), k


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(torchrun, ns, tmp_path):
    handler, X, y = ns["problem"]()
    ckpt = tmp_path / "ckpt"
    shutil.copytree(torchrun / "ckpt", ckpt)
    with pytest.raises(RepurposeError, match=r"global batch of 16 .* pass batch_size=16"):
        ns["finetune"](handler, B, checkpoint_dir=ckpt, max_epochs=4).fit(X, y)
    state = load_checkpoint(ckpt)
    assert state is not None and state["epoch"] == 2 and not state["complete"]
    resumed = ns["finetune"](handler, 2 * B, checkpoint_dir=ckpt, max_epochs=4).fit(X, y)
    whole = ns["finetune"](handler, 2 * B, max_epochs=4).fit(X, y)
    assert len(resumed.history_["loss"]) == 4
    assert resumed.history_["loss"][:2] == state["history"]["loss"]  # epochs 0-1: 2 processes
    np.testing.assert_allclose(resumed.history_["loss"], whole.history_["loss"], rtol=RTOL)
    _close(ns["weights"](resumed), ns["weights"](whole))


# ----- the pieces, in one process -----------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 300), batch_size=st.integers(1, 40), size=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_ranks_share_every_global_batch_exactly(n, batch_size, size, seed):
    if n < 2 * size:
        n = 2 * size
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [_ddp.rank_batches(n, batch_size, _ddp.World(r, size), order) for r in range(size)]
    assert len({len(p) for p in parts}) == 1  # every rank takes part in every step
    seen = []
    for step in zip(*parts, strict=True):
        total = step[0][1]
        assert all(t == total for _, t in step)
        assert sum(len(b) for b, _ in step) == total
        seen += torch.cat([b for b, _ in step]).tolist()
        weights = [_ddp.loss_weight(len(b), total, _ddp.World(0, size)) for b, _ in step]
        assert sum(weights) == pytest.approx(size)  # DDP's average is the global mean
        if len(parts[0]) > 1:
            assert min(len(b) for b, _ in step) >= min(batch_size, 2)
    assert seen == order.tolist()


def test_one_process_batches_are_the_usual_epoch_batches():
    order = torch.randperm(21, generator=torch.Generator().manual_seed(0))
    got = _ddp.rank_batches(21, 4, _ddp.World(), order)
    want = rp.repurposers._train_data.epoch_batches(21, 4, order)
    assert [b.tolist() for b, _ in got] == [b.tolist() for b in want]
    assert [t for _, t in got] == [len(b) for b in want]


def test_too_few_samples_for_the_processes():
    with pytest.raises(ValueError, match="3 training samples cannot be shared by 4"):
        _ddp.rank_batches(3, 8, _ddp.World(1, 4))


def test_distributed_true_outside_torchrun_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RepurposeError, match="torchrun --nproc_per_node"):
        _ddp.setup(True, torch.device("cpu"))
    with pytest.raises(ValueError, match="distributed='yes'"):
        _ddp.setup("yes", torch.device("cpu"))
    assert _ddp.setup("auto", torch.device("cpu")) == _ddp.World()


def test_sync_batchnorm_outside_torchrun_changes_nothing():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    x = torch.randn(5, 3, 6, 6)
    want = net(x)
    with _ddp.sync_batchnorm(net, _ddp.World()):
        got = net(x)
    assert torch.equal(got, want)
