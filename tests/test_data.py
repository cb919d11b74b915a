from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nasrl.data import DataError, load_images, random_crop, random_erasing, random_flip
from nasrl.errors import NasrlError

FIXTURE_VAL = 500  # the loader's default (5,000) is more than the 3,000-image fixture holds


def test_fashion_mnist_loads_with_a_seeded_validation_split(fashion_dir: Path) -> None:
    data = load_images("fashion-mnist", data_dir=fashion_dir, seed=0, val_size=FIXTURE_VAL)
    assert data.train_x.shape == (2500, 1, 28, 28) and data.val_x.shape == (500, 1, 28, 28)
    assert data.test_x.shape == (1000, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert abs(float(data.train_x.mean())) < 1e-3 and abs(float(data.train_x.std()) - 1) < 1e-3
    assert torch.bincount(data.test_y).tolist() == [100] * 10  # the fixture is balanced
    labels = torch.cat([data.train_y, data.val_y])
    assert torch.bincount(labels).tolist() == [300] * 10
    again = load_images("fashion-mnist", data_dir=fashion_dir, seed=0, val_size=FIXTURE_VAL)
    other = load_images("fashion-mnist", data_dir=fashion_dir, seed=1, val_size=FIXTURE_VAL)
    assert torch.equal(again.val_y, data.val_y) and torch.equal(again.val_x, data.val_x)
    assert not torch.equal(other.val_y, data.val_y)
    with pytest.raises(NasrlError, match="validation size must be between 1 and 2999, got 5000"):
        load_images("fashion-mnist", data_dir=fashion_dir)


@pytest.mark.full_data
def test_full_fashion_mnist_has_the_official_splits(full_fashion_dir: Path) -> None:
    data = load_images("fashion-mnist", data_dir=full_fashion_dir, seed=0)  # the default val_size
    assert data.train_x.shape == (55000, 1, 28, 28) and data.val_x.shape == (5000, 1, 28, 28)
    assert data.test_x.shape == (10000, 1, 28, 28)
    assert abs(float(data.train_x.mean())) < 1e-3 and abs(float(data.train_x.std()) - 1) < 1e-3
    assert torch.bincount(data.test_y).tolist() == [1000] * 10  # the official balanced test set
    other = load_images("fashion-mnist", data_dir=full_fashion_dir, seed=1)
    assert not torch.equal(other.val_y, data.val_y)


def test_fashion_mnist_found_through_the_environment_variable(monkeypatch: pytest.MonkeyPatch,
                                                            fashion_dir: Path) -> None:
    monkeypatch.setenv("NASRL_FASHION_MNIST", str(fashion_dir))
    data = load_images("fashion-mnist", download=False, val_size=FIXTURE_VAL)
    assert data.num_classes == 10 and len(data.test_x) == 1000


def copy_fashion(tmp_path: Path, fashion_dir: Path) -> Path:
    for f in fashion_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def test_truncated_gzip_is_named(tmp_path: Path, fashion_dir: Path) -> None:
    folder = copy_fashion(tmp_path, fashion_dir)
    target = folder / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: corrupt or truncated"):
        load_images("fashion-mnist", data_dir=folder, val_size=FIXTURE_VAL)


def test_idx_with_wrong_length_or_magic_is_named(tmp_path: Path, fashion_dir: Path) -> None:
    folder = copy_fashion(tmp_path, fashion_dir)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: IDX file has"):
        load_images("fashion-mnist", data_dir=folder, val_size=FIXTURE_VAL)
    target.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: not an IDX file"):
        load_images("fashion-mnist", data_dir=folder, val_size=FIXTURE_VAL)


def test_missing_file_in_an_explicit_folder_is_named(tmp_path: Path, fashion_dir: Path) -> None:
    folder = copy_fashion(tmp_path, fashion_dir)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(NasrlError, match="t10k-images-idx3-ubyte.gz not found in"):
        load_images("fashion-mnist", data_dir=folder, val_size=FIXTURE_VAL)
    with pytest.raises(NasrlError, match="does not exist"):
        load_images("fashion-mnist", data_dir=tmp_path / "nowhere", val_size=FIXTURE_VAL)


def test_missing_data_without_download_says_how_to_provide_it(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.delenv("NASRL_CIFAR10", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    import nasrl.data.images as images

    monkeypatch.setattr(images, "CIFAR_LOCATIONS", (tmp_path / "none",))
    with pytest.raises(NasrlError, match="cifar10: data not found .*--data-dir"):
        load_images("cifar10", download=False)


# -- CIFAR-10 python format, generated here --------------------------------------------------
def fake_cifar_batches(per_batch: int = 20) -> dict[str, dict[bytes, object]]:
    rng = np.random.default_rng(0)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        out[name] = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
    return out


def write_cifar_archive(folder: Path, batches: dict[str, dict[bytes, object]]) -> Path:
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_cifar10_archive_and_extracted_folder_give_the_same_images(tmp_path: Path) -> None:
    batches = fake_cifar_batches()
    (tmp_path / "archive").mkdir()
    write_cifar_archive(tmp_path / "archive", batches)
    extracted = tmp_path / "extracted" / "cifar-10-batches-py"
    extracted.mkdir(parents=True)
    for name, batch in batches.items():
        (extracted / name).write_bytes(pickle.dumps(batch, protocol=2))
    a = load_images("cifar10", data_dir=tmp_path / "archive", val_size=10, download=False)
    b = load_images("cifar10", data_dir=tmp_path / "extracted", val_size=10, download=False)
    assert a.train_x.shape == (90, 3, 32, 32) and a.val_x.shape == (10, 3, 32, 32)
    assert a.test_x.shape == (20, 3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    # the test set is the test batch, channel-major rows as in the format's description
    test = batches["test_batch"]
    assert a.test_y.tolist() == test[b"labels"]
    raw = np.asarray(test[b"data"]).reshape(-1, 3, 32, 32).astype(np.float32)
    unnormalized = a.test_x.numpy()
    corr = np.corrcoef(raw[:, 1].ravel(), unnormalized[:, 1].ravel())[0, 1]
    assert corr > 0.999


def test_cifar10_damaged_archive_and_hostile_pickle_are_refused(tmp_path: Path) -> None:
    path = write_cifar_archive(tmp_path, fake_cifar_batches())
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_images("cifar10", data_dir=tmp_path, download=False)

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    batches = fake_cifar_batches()
    batches["data_batch_3"] = {b"data": Evil(), b"labels": []}  # type: ignore[dict-item]
    path.unlink()
    write_cifar_archive(tmp_path, batches)
    with pytest.raises(DataError, match="data_batch_3: corrupt CIFAR-10 batch .*refusing to load"):
        load_images("cifar10", data_dir=tmp_path, download=False)


def test_digits_is_built_in_with_a_fixed_test_split() -> None:
    a = load_images("digits", seed=0)
    b = load_images("digits", seed=5)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train_x) + len(a.val_x) + len(a.test_x) == 1797
    assert torch.equal(a.test_y, b.test_y)  # the test set does not move with the seed
    assert not torch.equal(a.val_y, b.val_y)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(NasrlError, match="unknown dataset 'mnist' .*fashion-mnist"):
        load_images("mnist")


def test_random_crop_is_a_seeded_shift_with_zero_fill() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5) + 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = random_crop(x, 2, g1), random_crop(x, 2, g2)
    assert torch.equal(a, b) and a.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # each output is some window of the padded image
        windows = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) for w in windows)
    crops = random_crop(x.repeat(50, 1, 1, 1), 2, torch.Generator().manual_seed(0))
    assert len({c.sum().item() for c in crops}) > 5  # not one fixed shift


def test_random_erasing_zeroes_one_rectangle_of_the_share_asked() -> None:
    x = torch.randn(400, 2, 28, 28)
    out = random_erasing(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(out, random_erasing(x, 0.5, torch.Generator().manual_seed(0)))  # seeded
    erased = 0
    for o, xi in zip(out, x, strict=True):
        changed = (o != xi).any(0)  # (h, w), the same in every channel
        assert torch.equal((o == 0).all(0) | ~changed, torch.ones_like(changed))
        if not changed.any():
            continue
        erased += 1
        rows, cols = changed.any(1).nonzero().squeeze(1), changed.any(0).nonzero().squeeze(1)
        h, w = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        assert int(changed.sum()) == h * w  # one solid rectangle
        assert 0.5 * 0.02 * 28**2 <= h * w <= 1.2 * 0.4 * 28**2  # 2-40% of the area, rounded
        assert h * w <= 0.4 * 28**2 * 1.2 and min(h, w) / max(h, w) >= 0.3 * 0.75
    assert 150 < erased < 250
    assert torch.equal(random_erasing(x, 0.0, torch.Generator()), x)


def test_random_flip_mirrors_about_half() -> None:
    x = torch.randn(400, 1, 3, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert bool((flipped | same).all())
    assert 150 < int(flipped.sum()) < 250
