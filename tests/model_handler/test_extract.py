import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mh_models import make_resnet
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from repurpose import ModelHandler, Preprocess


def _manual(resnet, x):
    """Reference values computed by hand from the same modules."""
    with torch.no_grad():
        s = resnet.stem(torch.as_tensor(x))
        b0 = resnet.layer1[0]
        y = torch.relu(b0.bn1(b0.conv1(s)))
        add = b0.conv2(y) + s
        return {"stem": s, "layer1.0.add": add, "fc": resnet(torch.as_tensor(x))}


def test_multi_layer_values_and_pooling(resnet, images):
    h = ModelHandler(resnet)
    ref = _manual(resnet, images)
    f = h.extract(images, ["stem", "layer1.0.add", "fc"], batch_size=4, progress=False)
    assert list(f) == ["stem", "layer1.0.add", "fc"]
    np.testing.assert_allclose(f["stem"], ref["stem"].mean((2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(f["layer1.0.add"], ref["layer1.0.add"].mean((2, 3)).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(f["fc"], ref["fc"].numpy(), atol=1e-5)
    mx = h.extract(images, "stem", pooling="max", progress=False)["stem"]
    np.testing.assert_allclose(mx, ref["stem"].amax((2, 3)).numpy(), atol=1e-6)
    fl = h.extract(images, "stem", pooling="flatten", progress=False)["stem"]
    assert fl.shape == (10, 4 * 36)
    raw = h.extract(images, "layer1.0.add", pooling=None, progress=False)["layer1.0.add"]
    np.testing.assert_allclose(raw, ref["layer1.0.add"].numpy(), atol=1e-5)


def test_inplace_relu_after_requested_layer_does_not_change_it(images):
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1)).eval()
    f = ModelHandler(net).extract(images, ["0", "2"], pooling=None, progress=False)
    with torch.no_grad():
        ref = net[0](torch.as_tensor(images))
    np.testing.assert_allclose(f["0"], ref.numpy(), atol=1e-6)
    assert (f["0"] < 0).any()


def test_stops_after_deepest_layer_and_restores_mode(images):
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("the pass should have stopped before this layer")

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout(0.5), nn.ReLU(), Boom()).train()
    net[2].eval()
    f = ModelHandler(net).extract(images, ["0", "2"], progress=False)
    assert f["2"].shape == (10, 4)
    assert net.training and net[1].training and not net[2].training


def test_functional_op_stops_early():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)

        def forward(self, x):
            y = torch.relu(self.a(x)) * 2
            return self.b(y)

    net = Net()
    net.b.register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("ran b")))
    f = ModelHandler(net).extract(torch.ones(5, 3), ["mul"], progress=False)
    np.testing.assert_allclose(f["mul"], (torch.relu(net.a(torch.ones(5, 3))) * 2).detach(),
                               atol=1e-6)


class _Pairs(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 3


def test_all_input_kinds_agree(resnet, images):
    h = ModelHandler(resnet)
    ref = h.extract(images, ["fc"], progress=False)["fc"]
    t = torch.from_numpy(images)
    unlabelled = [t, images.astype(np.float64), TensorDataset(t), DataLoader(t, batch_size=4)]
    labelled = [_Pairs(images), DataLoader(_Pairs(images), batch_size=3),
                TensorDataset(t, torch.arange(10) % 3)]
    for data in unlabelled + labelled:
        f, y = h.extract(data, ["fc"], batch_size=4, progress=False, return_labels=True)
        np.testing.assert_allclose(f["fc"], ref, atol=1e-5)
        if any(data is d for d in unlabelled):
            assert y is None
        else:
            np.testing.assert_array_equal(y, np.arange(10) % 3)


def test_samples_with_three_items_are_rejected(resnet, images):
    t = torch.from_numpy(images)
    with pytest.raises(ValueError, match="got 3 items"):
        ModelHandler(resnet).extract(TensorDataset(t, t, t), ["fc"], progress=False)


def test_image_folder(tmp_path, resnet):
    rng = np.random.default_rng(0)
    for cls in ("b_dog", "a_cat"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            arr = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a_cat" / "notes.txt").write_text("not an image")
    pre = Preprocess(resize=7, crop=(6, 6), mean=(0.5, 0.5, 0.5))
    h = ModelHandler(resnet, preprocess=pre)
    f, y = h.extract(str(tmp_path), ["stem"], progress=False, return_labels=True)
    assert f["stem"].shape == (4, 4)
    np.testing.assert_array_equal(y, ["a_cat", "a_cat", "b_dog", "b_dog"])  # folder names
    assert h.image_folder(tmp_path).classes == ["a_cat", "b_dog"]
    img = Image.open(tmp_path / "a_cat" / "0.png")
    x = pre(img)[None].numpy()
    np.testing.assert_allclose(f["stem"][:1], h.extract(x, ["stem"], progress=False)["stem"],
                               atol=1e-5)


def test_memmap_equals_memory(tmp_path, resnet, images):
    h = ModelHandler(resnet)
    ds = _Pairs(images)
    mem, y = h.extract(ds, ["stem", "layer1.1.add"], batch_size=3, progress=False,
                       return_labels=True)
    disk, y2 = h.extract(ds, ["stem", "layer1.1.add"], batch_size=3, progress=False,
                         out=tmp_path / "feats", return_labels=True)
    for k in mem:
        assert isinstance(disk[k], np.memmap)
        np.testing.assert_array_equal(disk[k], mem[k])
    np.testing.assert_array_equal(y, y2)
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == [
        "index.json", "labels.npy", "layer1.1.add.npy", "stem.npy"]


class _Lazy(Dataset):
    """N samples made on demand, so the inputs take no memory."""

    def __init__(self, n, d):
        self.n, self.d = n, d

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((self.d,), float(i))


def test_memmap_keeps_memory_bounded(tmp_path):
    n, d, batch = 3000, 1024, 50  # 12 MB of features, 60 batches
    h = ModelHandler(nn.Sequential(nn.Identity(), nn.ReLU()))
    tracemalloc.start()
    try:
        disk = h.extract(_Lazy(n, d), ["1"], batch_size=batch, progress=False,
                         out=tmp_path / "f")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * d * 4 / 4  # far below what an in-memory result needs
    assert disk["1"].shape == (n, d)
    np.testing.assert_array_equal(disk["1"][[0, 1234, n - 1], 0], [0, 1234, n - 1])


def test_out_must_be_a_directory(tmp_path, chain, images):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        ModelHandler(chain).extract(images, ["0"], progress=False, out=tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me"


def test_bad_arguments(chain, images):
    h = ModelHandler(chain)
    with pytest.raises(ValueError, match="pooling='mean'; use one of"):
        h.extract(images, ["0"], pooling="mean", progress=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        h.extract(images, ["0"], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="cannot read data of type dict"):
        h.extract({"x": images}, ["0"], progress=False)
    with pytest.raises(ValueError, match="no layers requested"):
        h.extract(images, [], progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        h.extract("/nonexistent/folder", ["0"], progress=False)


def test_graphnet_extraction(graph, images):
    h = ModelHandler(graph)
    f = h.extract(images, ["relu1", "sum", "fc"], batch_size=3, progress=False)
    with torch.no_grad():
        ref = graph.run({"data": torch.from_numpy(images)}, ["r1", "s", "out"])
    np.testing.assert_allclose(f["relu1"], ref["r1"].mean((2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(f["fc"], ref["out"].numpy(), atol=1e-5)


def test_device_copy_leaves_module_alone():
    net = make_resnet()
    h = ModelHandler(net, device=torch.device("cpu"))
    assert h.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        g = ModelHandler(net, device="cuda")
        assert g.module is not net and next(net.parameters()).device.type == "cpu"


def test_inplace_ops_after_a_functional_layer_do_not_change_it(images):
    class Block(nn.Module):  # torchvision's BasicBlock ends like this
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.conv(x)
            out += x - 2.0
            return self.relu(out)

    net = Block().eval()
    h = ModelHandler(net)
    assert h.layer_names == ["conv", "sub", "add", "relu"]  # fx records += as add
    f = h.extract(images, ["add", "relu"], pooling=None, progress=False)
    x = torch.from_numpy(images)
    with torch.no_grad():
        ref = net.conv(x) + x - 2.0
    np.testing.assert_allclose(f["add"], ref.numpy(), atol=1e-6)
    assert (f["add"] < 0).any() and (f["relu"] >= 0).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_unavailable_device_is_a_clear_error(chain):
    with pytest.raises(ValueError, match="cannot use device 'cuda'"):
        ModelHandler(chain, device="cuda")


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(*(st.integers(1, 4) for _ in range(4))),
       mode=st.sampled_from(["avg", "max", "flatten"]), seed=st.integers(0, 2**16))
def test_nhwc_pooling_equals_pooling_the_nchw_tensor(shape, mode, seed):
    from repurpose.model_handler._extract import pool

    nhwc = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    nchw = nhwc.permute(0, 3, 1, 2).contiguous()
    got = pool(nhwc, mode, "layer", nhwc=True)
    torch.testing.assert_close(got, pool(nchw, mode, "layer"))
    assert got.shape[0] == shape[0] and got.dim() == 2
