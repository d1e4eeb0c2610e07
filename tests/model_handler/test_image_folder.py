"""Image folders as users give them: str or Path, odd names, bad files, mixed sizes."""

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from repurpose.model_handler import ImageFolder, ModelHandler, Preprocess
from repurpose.model_handler._data import num_samples
from repurpose.repurposers import LogisticRegressionRepurposer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _folder(root: Path, counts: dict[str, int], size=(6, 5), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"img {i}.png")
    return root


def test_str_path_with_more_images_than_characters(tmp_path, monkeypatch):
    # Regression: the sample count came from len(path), so this failed with
    # "data yielded more than the 1 samples it declared".
    monkeypatch.chdir(tmp_path)
    _folder(Path("d"), {"a": 3, "b": 3})
    h = ModelHandler(_net())
    for data in ("d", Path("d")):
        assert num_samples(data) == 6
        f, y = h.extract(data, ["2"], progress=False, return_labels=True)
        assert f["2"].shape == (6, 4)
        assert y.tolist() == ["a"] * 3 + ["b"] * 3


def test_fit_predict_score_use_folder_names(tmp_path):
    root = _folder(tmp_path / "d", {"cat": 6, "dog": 6})
    rep = LogisticRegressionRepurposer(ModelHandler(_net()), feature_layers="2",
                                       progress=False)
    rep.fit(str(root))
    assert rep.classes_.tolist() == ["cat", "dog"]
    assert set(rep.predict(str(root)).tolist()) <= {"cat", "dog"}
    assert 0.0 <= rep.score(str(root)) <= 1.0
    assert set(rep.predict(root).tolist()) <= {"cat", "dog"}


def test_a_dataloader_over_an_image_folder_gives_names(tmp_path):
    root = _folder(tmp_path / "d", {"x": 2, "y": 3})
    loader = DataLoader(ImageFolder(root), batch_size=4)
    _, y = ModelHandler(_net()).extract(loader, ["2"], progress=False, return_labels=True)
    assert y.tolist() == ["x", "x", "y", "y", "y"]


def test_an_empty_class_folder_is_no_class(tmp_path):
    root = _folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "empty_one").mkdir()
    with pytest.warns(UserWarning, match="'empty_one' hold no images"):
        folder = ImageFolder(root)
    assert folder.classes == ["a", "b"]


def test_an_unreadable_image_raises_naming_it_by_default(tmp_path):
    root = _folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.jpg.*on_error='skip'"):
        ModelHandler(_net()).extract(root, ["2"], progress=False)


def test_on_error_skip_leaves_unreadable_images_out_with_one_warning(tmp_path):
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "broken.jpg").write_bytes(b"garbage")
    good = Image.new("RGB", (6, 5))
    good.save(root / "b" / "trunc.jpg")
    data = (root / "b" / "trunc.jpg").read_bytes()
    (root / "b" / "trunc.jpg").write_bytes(data[: len(data) // 3])  # truncated JPEG
    h = ModelHandler(_net())
    for data_arg in (h.image_folder(root, on_error="skip"), str(root)):
        kwargs = {} if isinstance(data_arg, ImageFolder) else {"on_error": "skip"}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            f, y = h.extract(data_arg, ["2"], progress=False, return_labels=True, **kwargs)
        skipped = [w for w in caught if "skipped" in str(w.message)]
        assert len(skipped) == 1 and "skipped 2 unreadable" in str(skipped[0].message)
        assert f["2"].shape == (6, 4) and y.tolist() == ["a"] * 3 + ["b"] * 3
    folder = h.image_folder(root, on_error="skip")
    with pytest.warns(UserWarning):
        LogisticRegressionRepurposer(h, feature_layers="2", progress=False).fit(folder)
    assert sorted(p.name for p in folder.skipped) == ["broken.jpg", "trunc.jpg"]
    assert len(folder.loaded) == 6
    with pytest.raises(ValueError, match="on_error='ignore'; use 'raise' or 'skip'"):
        h.image_folder(root, on_error="ignore")


def test_mixed_sizes_without_resize_name_the_file_and_the_fix(tmp_path):
    root = _folder(tmp_path / "d", {"a": 2}, size=(6, 5))
    _folder(root, {"b": 1}, size=(9, 7), seed=1)
    with pytest.raises(ValueError, match=r"img 0\.png' \(9x7 pixels\).*\(3, 7, 9\).*resize"):
        ModelHandler(_net()).extract(root, ["2"], progress=False)
    resized = ModelHandler(_net(), preprocess=Preprocess(resize=(5, 6)))
    assert resized.extract(root, ["2"], progress=False)["2"].shape == (3, 4)


def test_mixed_shapes_in_a_dataset_give_a_clear_error():
    samples = [torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)]
    with pytest.raises(ValueError, match=r"different shapes .*same shape"):
        ModelHandler(_net()).extract(samples_dataset(samples), ["2"], progress=False)


def samples_dataset(samples):
    class _DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            return samples[i]

    return _DS()


def test_nan_inputs_are_an_error_not_nan_features():
    x = np.zeros((5, 3, 4, 4), np.float32)
    x[3, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values \(sample 3\)"):
        ModelHandler(_net()).extract(x, ["2"], batch_size=2, progress=False)


def test_inputs_the_network_cannot_take_give_a_clear_error():
    h = ModelHandler(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), input_shape=(3, 2, 2))
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(3, 4, 4\).*declares "
                                         r"\(3, 2, 2\).*preprocessing"):
        h.extract(np.zeros((2, 3, 4, 4), np.float32), ["1"], progress=False)


_NAMES = st.text(alphabet="abcxyz _-.é", min_size=1, max_size=8).map(str.strip).filter(
    lambda s: s not in ("", ".", "..") and not s.startswith("."))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.dictionaries(_NAMES, st.integers(0, 7), min_size=1, max_size=4),
       n_bad=st.integers(0, 2), as_str=st.booleans(), batch_size=st.integers(1, 5))
def test_sample_count_equals_readable_images(layout, n_bad, as_str, batch_size):
    """For any layout and path type, extract returns one row per readable image, labelled
    with its folder name (empty folders and unreadable files are left out)."""
    if not any(layout.values()):
        layout = {**layout, "zz": 1}
    with tempfile.TemporaryDirectory(prefix="with space ") as tmp:
        root = _folder(Path(tmp) / "my images", layout, size=(3, 3))
        first = sorted(n for n, c in layout.items() if c)[0]
        for i in range(n_bad):
            (root / first / f"bad{i}.jpg").write_bytes(b"no image")
        data = str(root) if as_str else root
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert num_samples(data) == sum(layout.values()) + n_bad
            f, y = ModelHandler(_net()).extract(data, ["2"], batch_size=batch_size,
                                                progress=False, return_labels=True,
                                                on_error="skip")
        expected = [name for name in sorted(layout) for _ in range(layout[name])]
        assert f["2"].shape == (len(expected), 4)
        assert y.tolist() == expected
