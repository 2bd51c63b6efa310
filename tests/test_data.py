"""Tests for tf_precrop.data: tfds pipelines (mocked) and the offline Fashion-MNIST route."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_precrop import data


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=20):
        yield


def _first_batch(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def test_info_of_every_supported_dataset():
    assert {name: (i.input_shape, i.num_classes) for name, i in data.SUPPORTED.items()} == {
        "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
        "mnist": ((28, 28, 1), 10), "fashion_mnist": ((28, 28, 1), 10),
        "imagenet2012": ((224, 224, 3), 1000)}


def test_unknown_dataset_lists_supported():
    with pytest.raises(ValueError) as error:
        data.info("svhn")
    assert str(error.value) == (
        "Unsupported dataset: name='svhn'. Supported datasets: "
        "cifar10, cifar100, fashion_mnist, imagenet2012, mnist.")


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive int. Received: batch_size=0"),
    ({"batch_size": 8, "take": -1}, "take must be a positive int or None. Received: take=-1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        data.load("mnist", "train", **kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("name", sorted(data.SUPPORTED))
def test_batches_have_the_documented_shapes_and_types(mock_tfds, name, tmp_path):
    ds = data.load(name, "train", 8, augment=True, take=12, data_dir=str(tmp_path))
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [x.shape for x, _ in batches] == [(8, *data.info(name).input_shape),
                                            (4, *data.info(name).input_shape)]
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    assert all(0 <= y.min() and y.max() < data.info(name).num_classes for _, y in batches)


def test_unstandardized_images_are_in_unit_range(mock_tfds):
    images, _ = _first_batch(data.load("cifar10", "test", 20, standardize=False))
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5


def test_standardization_uses_the_dataset_statistics(mock_tfds):
    raw, _ = _first_batch(data.load("fashion_mnist", "test", 20, standardize=False))
    standardized, _ = _first_batch(data.load("fashion_mnist", "test", 20))
    np.testing.assert_allclose(standardized, (raw - 0.2860) / 0.3530, rtol=1e-5, atol=1e-5)


def test_same_seed_same_augmented_batches_other_seed_differs(mock_tfds):
    def first(seed):
        return _first_batch(data.load("cifar10", "train", 16, augment=True, seed=seed))[0]

    np.testing.assert_array_equal(first(3), first(3))
    assert not np.array_equal(first(3), first(4))


def _matches_shift(original, augmented, max_shift, allow_flip):
    """Whether `augmented` is `original` shifted by <= max_shift px (zero fill), maybe mirrored."""
    candidates = [original, original[:, ::-1]] if allow_flip else [original]
    height, width = original.shape[:2]
    padded = [np.pad(c, ((max_shift,) * 2, (max_shift,) * 2, (0, 0))) for c in candidates]
    return any(np.array_equal(p[dy:dy + height, dx:dx + width], augmented)
               for p in padded for dy in range(2 * max_shift + 1) for dx in range(2 * max_shift + 1))


@pytest.mark.parametrize("name, max_shift, allow_flip", [
    ("mnist", 2, False), ("fashion_mnist", 2, True), ("cifar10", 4, True)])
def test_augmentation_is_a_small_shift_and_flip_only_where_allowed(mock_tfds, name, max_shift,
                                                                    allow_flip):
    kwargs = {"shuffle": False, "standardize": False}
    original, labels = _first_batch(data.load(name, "train", 20, **kwargs))
    augmented, augmented_labels = _first_batch(data.load(name, "train", 20, augment=True, **kwargs))
    np.testing.assert_array_equal(labels, augmented_labels)
    assert not np.array_equal(original, augmented)
    assert all(_matches_shift(o, a, max_shift, allow_flip) for o, a in zip(original, augmented))
    if not allow_flip:  # mirrored digits are not digits: no example may be a pure mirror image
        assert not any(_matches_shift(o[:, ::-1], a, max_shift, False) and
                       not _matches_shift(o, a, max_shift, False)
                       for o, a in zip(original, augmented))


def test_prepare_offline_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.prepare_fashion_mnist_offline(str(tmp_path / "tfds"), source_dir=str(tmp_path))
    assert str(error.value) == (
        f"Fashion-MNIST files missing in source_dir={str(tmp_path)!r}: "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz. Install them with `apt-get install dataset-fashion-mnist` "
        "or pass the directory holding the original files.")


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DEBIAN_DIR),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_load_prepares_real_fashion_mnist_offline(tmp_path):
    """~20 s: the real 60,000/10,000 splits, prepared through tfds from the Debian files."""
    data_dir = str(tmp_path / "tfds")
    ds = data.load("fashion_mnist", "test", 2000, data_dir=data_dir, standardize=False)
    images = np.concatenate([x.numpy() for x, _ in ds])
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    assert builder.is_prepared()
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
        "train": 60000, "test": 10000}
    assert images.shape == (10000, 28, 28, 1)
    assert abs(images.mean() - 0.2860) < 0.005  # the test split's mean pixel, documented 0.2868
    assert not [f for _, _, files in os.walk(data_dir) for f in files if f.endswith(".gz")]
