"""Streaming training of the network repurposers: batching, data sources, defaults, sizes."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.base import clone
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import repurpose as rp
from repurpose.model_handler import ImageFolder, Preprocess
from repurpose.repurposers import _train_data
from repurpose.repurposers._network import TRAINING_PARAMS
from repurpose.repurposers._train_data import Split, TensorSource, epoch_batches
from repurpose.repurposers._training import Trainer, TrainSettings, split_validation
from repurpose.testing import tiny_problem


# ----- batching: every sample exactly once per epoch ----------------------------------------
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_an_epoch_visits_every_sample_exactly_once(n, batch_size, seed):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = epoch_batches(n, batch_size, order)
    seen = torch.cat(batches).tolist()
    assert sorted(seen) == list(range(n))
    assert seen == order.tolist()  # the shuffled order is kept
    if n > 1 and batch_size > 1:
        assert min(len(b) for b in batches) >= 2  # no final batch of one in train mode
    assert max(len(b) for b in batches) <= batch_size + 1
    merged = batch_size > 1 and n > batch_size and n % batch_size == 1
    assert len(batches) == (n // batch_size if merged else -(-n // batch_size))
    plain = epoch_batches(n, batch_size, merge_single=False)  # prediction: plain chunks
    assert [len(b) for b in plain] == [min(batch_size, n - i) for i in range(0, n, batch_size)]


def _recording_trainer(n_epochs: int, batch_size: int, seen: list[list[float]]) -> Trainer:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))

    def augment(xb: torch.Tensor) -> torch.Tensor:
        seen[-1].extend(xb[:, 0].tolist())
        return xb

    def next_epoch(epoch, logs):
        seen.append([])

    settings_ = TrainSettings(max_epochs=n_epochs, batch_size=batch_size, progress=False,
                              augment=augment, callbacks=(next_epoch,), patience=None)
    return Trainer(net, [{"params": list(net.parameters())}], settings_)


@pytest.mark.parametrize("n", [5, 9, 13, 4])
def test_trainer_trains_on_every_sample_each_epoch(n):
    # batch_size 4: n = 5 (bs + 1) raised IndexError, 9 (2 bs + 1) and 13 skipped a batch
    seen: list[list[float]] = [[]]
    x = torch.arange(n, dtype=torch.float32)[:, None]
    _recording_trainer(3, 4, seen).fit((x,), torch.arange(n) % 2)
    assert [sorted(s) for s in seen[:3]] == [list(map(float, range(n)))] * 3


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(1, 12), min_size=2, max_size=8),
       fraction=st.floats(0.01, 0.9), seed=st.integers(0, 1000))
def test_validation_split_keeps_every_class_in_training(counts, fraction, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    train, val = split_validation(y, fraction, seed)
    assert set(y[train]) == set(y)  # no class loses its last training sample
    if val is not None:
        assert len(np.intersect1d(train, val)) == 0
        assert sorted(np.r_[train, val].tolist()) == list(range(len(y)))
    else:
        assert train.tolist() == list(range(len(y)))


# ----- image folders ------------------------------------------------------------------------
def _write_folder(root, per_class: int = 5, classes=("blue", "red"), seed: int = 0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(9, 41, size=2))  # odd sizes on purpose
            img = rng.integers(0, 90, size=(h, w, 3)).astype(np.uint8)
            img[..., 2 if c == 0 else 0] += 160
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


def _cnn_handler() -> rp.ModelHandler:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))
    return rp.ModelHandler(net, input_shape=(3, 16, 16), preprocess=Preprocess(resize=(16, 16)))


def test_image_folder_labels_come_from_the_file_list(tmp_path, monkeypatch):
    folder = _write_folder(tmp_path / "data")
    loads = []
    original = ImageFolder.__getitem__
    monkeypatch.setattr(ImageFolder, "__getitem__",
                        lambda self, i: loads.append(i) or original(self, i))
    rep = rp.FineTuneRepurposer(_cnn_handler())
    source, labels = rep._prepare(str(folder), None, labels=True)
    assert loads == [] and len(source) == 10
    assert labels.tolist() == [0] * 5 + [1] * 5


def test_fit_streams_each_image_once_per_epoch(tmp_path, monkeypatch):
    folder = _write_folder(tmp_path / "data", per_class=6)
    loads = []
    original = ImageFolder.__getitem__
    monkeypatch.setattr(ImageFolder, "__getitem__",
                        lambda self, i: loads.append(i) or original(self, i))
    rep = rp.FineTuneRepurposer(_cnn_handler(), max_epochs=3, batch_size=4, progress=False,
                                random_state=0, freeze=None, validation_fraction=0.0).fit(folder)
    # one image to size the head, then each image once per epoch
    assert len(loads) == 1 + 3 * 12
    assert sorted(loads[1:13]) == list(range(12))
    pred = rep.predict(folder)
    assert pred.shape == (12,) and set(pred.tolist()) <= {0, 1}
    assert 0.0 <= rep.score(folder) <= 1.0


@pytest.mark.parametrize("per_class,batch_size", [(1, 4), (3, 5), (9, 8), (5, 3)])
def test_awkward_sizes_fit_and_predict(tmp_path, per_class, batch_size):
    # 2 classes: N = 2 (one per class), 6 (bs + 1), 18 (2 bs + 2), 10 (3 bs + 1)
    folder = _write_folder(tmp_path / "data", per_class=per_class)
    for cls in (rp.FineTuneRepurposer, rp.RandomFreezeRepurposer):
        rep = cls(_cnn_handler(), max_epochs=2, batch_size=batch_size, progress=False,
                  random_state=0).fit(str(folder))
        assert rep.predict_proba(str(folder)).shape == (2 * per_class, 2)
        assert len(rep.history_["loss"]) == 2


def test_num_workers_give_the_same_model(tmp_path):
    folder = _write_folder(tmp_path / "data", per_class=4)
    kw = {"max_epochs": 2, "batch_size": 3, "progress": False, "random_state": 0,
          "freeze": None}
    a = rp.FineTuneRepurposer(_cnn_handler(), **kw).fit(folder)
    b = rp.FineTuneRepurposer(_cnn_handler(), num_workers=2, **kw).fit(folder)
    for key, value in a.model_.state_dict().items():
        assert torch.equal(value, b.model_.state_dict()[key]), key
    with pytest.raises(ValueError, match="num_workers=-1"):
        rp.FineTuneRepurposer(_cnn_handler(), num_workers=-1, **kw).fit(folder)


def test_checkpoint_resume_from_a_folder_is_exact(tmp_path):
    folder = _write_folder(tmp_path / "data", per_class=6)
    kw = {"max_epochs": 3, "batch_size": 4, "progress": False, "random_state": 0,
          "freeze": None, "dropout": 0.3}
    plain = rp.FineTuneRepurposer(_cnn_handler(), **kw).fit(folder)

    def stop(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        rp.FineTuneRepurposer(_cnn_handler(), checkpoint_dir=ckpt, callbacks=[stop],
                              **kw).fit(folder)
    resumed = rp.FineTuneRepurposer(_cnn_handler(), checkpoint_dir=ckpt, **kw).fit(folder)
    for key, value in plain.model_.state_dict().items():
        assert torch.equal(value, resumed.model_.state_dict()[key]), key
    # an image changed on disk: the checkpoint belongs to another run
    Image.new("RGB", (13, 17), (1, 2, 3)).save(folder / "red" / "000.png")
    with pytest.raises(rp.RepurposeError, match="different run"):
        rp.FineTuneRepurposer(_cnn_handler(), checkpoint_dir=ckpt, **kw).fit(folder)


# ----- other kinds of data ------------------------------------------------------------------
class _Pairs(Dataset):
    """A dataset with no label shortcut: labels are found by one pass over it."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class _Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y, strict=True))


@pytest.mark.parametrize("kind", ["tensor_dataset", "dataset", "loader", "iterable", "strings"])
def test_datasets_loaders_and_streams(kind):
    p = tiny_problem()
    x, y = torch.as_tensor(p.X_train), torch.as_tensor(p.y_train)
    names = np.array(["ant", "bee", "cat"])[p.y_train]
    data = {"tensor_dataset": TensorDataset(x, y), "dataset": _Pairs(x, y),
            "loader": DataLoader(TensorDataset(x, y), batch_size=5),
            "iterable": _Stream(x, y), "strings": _Pairs(x, names.tolist())}[kind]
    rep = rp.FineTuneRepurposer(p.handler, max_epochs=2, batch_size=8, progress=False,
                                random_state=0).fit(data)
    expected = np.unique(names) if kind == "strings" else np.unique(p.y_train)
    np.testing.assert_array_equal(rep.classes_, expected)
    assert rep.predict(p.X_test).shape == (len(p.X_test),)


def test_mismatched_labels_and_empty_data():
    p = tiny_problem()
    rep = rp.FineTuneRepurposer(p.handler, max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="24 samples but y has 3 labels"):
        rep.fit(p.X_train, p.y_train[:3])
    with pytest.raises(ValueError, match="empty"):
        rep.fit(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0)))


def test_tensor_source_reads_batches_lazily_as_float32():
    x = np.arange(24, dtype=np.float64).reshape(6, 4)
    split = Split(TensorSource([x]), torch.arange(6) % 2).subset([1, 3, 5])
    (batch,) = next(split.read([torch.tensor([0, 2])]))
    assert batch.dtype == torch.float32 and batch[:, 0].tolist() == [4.0, 20.0]
    assert split.y.tolist() == [1, 1, 1]


# ----- defaults come from the network --------------------------------------------------------
def test_default_layers_come_from_the_network():
    p = tiny_problem()
    rep = rp.FineTuneRepurposer(p.handler, max_epochs=1, progress=False).fit(p.X_train,
                                                                               p.y_train)
    assert rep.transfer_layer_ == "relu7"  # the input of fc8, the last layer with weights
    assert rep.frozen_layers_ == ["conv1", "conv2", "fc6", "fc7"]
    trainable = {n for n, q in rep.model_.body.named_parameters() if q.requires_grad}
    assert trainable == set()
    # a network without AlexNet names
    handler = _cnn_handler()
    rep = rp.FineTuneRepurposer(handler, max_epochs=1, progress=False)
    rep.fit(np.random.default_rng(0).normal(size=(12, 3, 16, 16)).astype(np.float32),
            [0, 1] * 6)
    assert rep.transfer_layer_ == "4" and rep.frozen_layers_ == ["0", "1"]
    # explicit values still work; None keeps the whole network and trains it all
    rep = rp.FineTuneRepurposer(p.handler, transfer_layer="fc7", freeze="up_to:conv2",
                                max_epochs=1, progress=False).fit(p.X_train, p.y_train)
    assert rep.transfer_layer_ == "fc7" and rep.frozen_layers_ == ["conv1", "conv2"]
    rep = rp.FineTuneRepurposer(p.handler, transfer_layer=None, freeze=None, max_epochs=1,
                                progress=False).fit(p.X_train, p.y_train)
    assert rep.transfer_layer_ is None and rep.frozen_layers_ == []


def test_auto_needs_a_layer_below_the_classifier():
    handler = rp.ModelHandler(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="transfer_layer='auto'"):
        rp.FineTuneRepurposer(handler, progress=False).fit(np.zeros((4, 3), np.float32),
                                                           [0, 1, 0, 1])


# ----- shared parameters --------------------------------------------------------------------
def test_shared_training_parameters_are_declared_once():
    ft = inspect.signature(rp.FineTuneRepurposer).parameters
    rf = inspect.signature(rp.RandomFreezeRepurposer).parameters
    shared = [q.name for q in TRAINING_PARAMS]
    # FineTune's LP-FT options come after the shared block, so positions do not move
    assert list(ft)[5:5 + len(shared)] == shared == list(rf)[-len(shared):]
    assert list(ft)[5 + len(shared):] == ["head_init", "probe_C", "wise_alpha"]
    assert list(ft)[:5] == ["handler", "transfer_layer", "n_hidden", "freeze", "dropout"]
    assert ft["body_lr_mult"].default == 0.1 and rf["body_lr_mult"].default == 1.0
    assert "batch_size : int" in rp.FineTuneRepurposer.__doc__
    assert "num_layers_to_drop : int" in rp.RandomFreezeRepurposer.__doc__
    # positional arguments keep their old places; unknown names are refused
    rep = rp.FineTuneRepurposer(None, "fc7", 5, "up_to:conv1", 0.2, 0.01)
    assert (rep.transfer_layer, rep.n_hidden, rep.freeze, rep.dropout, rep.lr) == (
        "fc7", 5, "up_to:conv1", 0.2, 0.01)
    with pytest.raises(TypeError, match="lrr"):
        rp.RandomFreezeRepurposer(lrr=0.1)
    twin = clone(rp.RandomFreezeRepurposer(num_workers=2, body_lr_mult=0.5))
    assert twin.get_params()["num_workers"] == 2 and twin.body_lr_mult == 0.5
    assert set(twin.get_params()) == set(rf)


def test_saved_parameters_include_num_workers(tmp_path):
    p = tiny_problem()
    rep = rp.FineTuneRepurposer(p.handler, max_epochs=1, num_workers=0, progress=False,
                                device="cpu", checkpoint_dir=tmp_path / "c").fit(p.X_train,
                                                                                 p.y_train)
    rep.save(tmp_path / "saved")
    params = json.loads((tmp_path / "saved" / "config.json").read_text())["params"]
    assert params["num_workers"] == 0 and params["checkpoint_dir"] == str(tmp_path / "c")
    loaded = rp.load(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.predict_proba(p.X_test), rep.predict_proba(p.X_test))


# ----- gated, end to end ----------------------------------------------------------------------
def test_gated_end_to_end_streams_a_folder(tmp_path):
    folder = _write_folder(tmp_path / "data", per_class=4)
    rep = rp.GatedRepurposer(_cnn_handler(), feature_layers=["2", "4"], end_to_end=True,
                             max_epochs=2, batch_size=3, progress=False, random_state=0)
    source, labels = rep._prepare(str(folder), None, labels=True)
    assert isinstance(source, _train_data.Source) and len(labels) == 8
    rep.fit(str(folder))
    assert rep.predict_proba(folder).shape == (8, 2)
    assert rep.gates_(str(folder)).shape[:2] == (8, 2)


# ----- the real network -----------------------------------------------------------------------
@pytest.mark.realdata
def test_squeezenet_default_finetune_on_a_flowers_folder(realdata, tmp_path):
    squeeze = realdata / "squeezenet_v1.0"
    spec = json.loads((squeeze / "preprocess.json").read_text())
    handler = rp.ModelHandler.from_caffe(
        squeeze / spec["prototxt"], squeeze / spec["caffemodel"], mean=spec["mean"],
        resize=tuple(spec["resize"]))
    for name in ("daisy", "sunflower"):
        (tmp_path / name).mkdir()
        for src in sorted((realdata / "flowers12" / "train" / name).glob("*.jpg"))[:5]:
            shutil.copy(src, tmp_path / name / src.name)
    rep = rp.FineTuneRepurposer(handler, max_epochs=1, batch_size=4, progress=False,
                                random_state=0).fit(str(tmp_path))
    assert rep.transfer_layer_ == "drop9"  # SqueezeNet's classifier is conv_final
    assert "conv1" in rep.frozen_layers_ and "fire9/conv3x3_2" in rep.frozen_layers_
    assert not any(q.requires_grad for q in rep.model_.body.parameters())
    pred = rep.predict(str(tmp_path))
    assert pred.shape == (10,) and set(pred.tolist()) <= set(rep.classes_.tolist())
