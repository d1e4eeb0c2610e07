import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from repurpose.model_handler import ImageFolder, ModelHandler, as_batches


def test_array_batches_and_float_conversion():
    x = np.arange(10 * 2).reshape(10, 2)  # int64
    batches = list(as_batches(x, 4))
    assert [b.shape[0] for b, _ in batches] == [4, 4, 2]
    assert all(b.dtype == torch.float32 and y is None for b, y in batches)


def test_shuffle_is_seeded_and_complete():
    x = torch.arange(20.0).view(20, 1)
    a = torch.cat([b for b, _ in as_batches(x, 6, shuffle=True, seed=3)]).view(-1)
    b = torch.cat([b for b, _ in as_batches(x, 6, shuffle=True, seed=3)]).view(-1)
    assert torch.equal(a, b) and not torch.equal(a, x.view(-1))
    assert sorted(a.tolist()) == x.view(-1).tolist()
    ds = TensorDataset(x, torch.arange(20))
    for xb, yb in as_batches(ds, 6, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb.view(-1).numpy(), yb)


def test_loader_keeps_its_batching():
    loader = DataLoader(TensorDataset(torch.zeros(7, 2), torch.ones(7)), batch_size=5)
    assert [(x.shape[0], y.tolist()) for x, y in as_batches(loader, 2)] == [
        (5, [1.0] * 5), (2, [1.0] * 2)]


def test_iterable_dataset_without_length(tmp_path):
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(torch.ones(5, 3))

    h = ModelHandler(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    assert h.extract(Stream(), ["0"], batch_size=2, progress=False)["0"].shape == (5, 2)
    disk = h.extract(Stream(), ["0"], batch_size=2, progress=False, out=tmp_path / "f")
    assert disk["0"].shape == (5, 2)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="has no subfolders"):
        ImageFolder(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        ImageFolder(tmp_path)
    (tmp_path / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*x.png"):
        ImageFolder(tmp_path)[0]


def test_bad_inputs():
    with pytest.raises(ValueError, match="batch_size=-1"):
        as_batches(np.zeros((3, 2)), -1)
    with pytest.raises(ValueError, match="inputs have shape \\(3,\\)"):
        list(as_batches(np.zeros(3), 2))
    with pytest.raises(ValueError, match="got a list/tuple of arrays"):
        as_batches([np.zeros((3, 2)), np.zeros(3)], 2)


def test_loader_with_sampler_and_drop_last():
    from torch.utils.data import SubsetRandomSampler

    h = ModelHandler(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    ds = TensorDataset(torch.randn(10, 2))
    sub = DataLoader(ds, batch_size=3, sampler=SubsetRandomSampler(range(4)))
    assert h.extract(sub, ["0"], progress=False)["0"].shape == (4, 2)
    drop = DataLoader(ds, batch_size=3, drop_last=True)
    assert h.extract(drop, ["0"], progress=False)["0"].shape == (9, 2)
