"""Input pipelines for the apps and benchmarks, always through tensorflow-datasets.

`load` returns a batched `tf.data.Dataset` of `(image, label)` pairs: images are
float32, scaled to [0, 1] and then standardized with the dataset's per-channel
mean and standard deviation (pass `standardize=False` to keep [0, 1]); labels
are int64 class indices. `augment=True` applies the standard training
augmentation of the dataset (see `SUPPORTED`).

Offline Fashion-MNIST: the Debian package `dataset-fashion-mnist` installs the
original Fashion-MNIST files, the very files tfds's `fashion_mnist` builder
downloads. `prepare_fashion_mnist_offline` stages them where tfds's download
manager looks for them and prepares the dataset; `load("fashion_mnist", ...)`
does this automatically when the dataset is not prepared yet and the files are
present, so the same code path serves online and offline users.
"""

import dataclasses
import json
import os
import shutil
import tempfile

from tf_precrop import _extras

tf = _extras.require("tensorflow", "tf_precrop.data")
tfds = _extras.require("tensorflow_datasets", "tf_precrop.data")

__all__ = [
    "DatasetInfo",
    "SUPPORTED",
    "FASHION_MNIST_DEBIAN_DIR",
    "info",
    "load",
    "prepare_fashion_mnist_offline",
]

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
"""Where the Debian package `dataset-fashion-mnist` installs the idx files."""

_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a supported dataset.

    Attributes:
        name: tfds name, e.g. "fashion_mnist".
        input_shape: shape of one preprocessed image, e.g. (28, 28, 1).
        num_classes: number of labels.
        train_split: tfds split used for training.
        test_split: tfds split used for evaluation.
        augmentation: one-line description of the `augment=True` pipeline.
        mean: per-channel mean of the [0, 1]-scaled training images.
        std: per-channel standard deviation of the [0, 1]-scaled training images.
        manual_download: whether tfds needs the files placed by hand
            (pass `manual_dir=` to `load`).
    """

    name: str
    input_shape: tuple
    num_classes: int
    train_split: str
    test_split: str
    augmentation: str
    mean: tuple
    std: tuple
    manual_download: bool = False


SUPPORTED = {
    "cifar10": DatasetInfo(
        "cifar10", (32, 32, 3), 10, "train", "test",
        "zero-pad 4, random 32x32 crop, horizontal flip",
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo(
        "cifar100", (32, 32, 3), 100, "train", "test",
        "zero-pad 4, random 32x32 crop, horizontal flip",
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": DatasetInfo(
        "mnist", (28, 28, 1), 10, "train", "test",
        "zero-pad 2, random 28x28 crop (shift <= 2 px), no flip (digits are not symmetric)",
        (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", (28, 28, 1), 10, "train", "test",
        "zero-pad 2, random 28x28 crop (shift <= 2 px), horizontal flip",
        (0.2860,), (0.3530,)),
    "imagenet2012": DatasetInfo(
        "imagenet2012", (224, 224, 3), 1000, "train", "validation",
        "random resized crop to 224x224 (area 8-100%), horizontal flip; "
        "eval: resize to 256, central 224x224 crop",
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), manual_download=True),
}
"""Supported dataset names -> DatasetInfo."""


def info(name):
    """Returns the static description of a supported dataset (no tfds access).

    Args:
        name: a key of `SUPPORTED`, e.g. "fashion_mnist".

    Returns:
        A `DatasetInfo` with `input_shape` and `num_classes`.

    Raises:
        ValueError: if `name` is not supported; the message lists the choices.

    Example:
        >>> info("fashion_mnist").input_shape
        (28, 28, 1)
    """
    if name not in SUPPORTED:
        raise ValueError(
            f"Unsupported dataset: name={name!r}. Supported datasets: "
            f"{', '.join(sorted(SUPPORTED))}.")
    return SUPPORTED[name]


def load(name, split, batch_size, *, data_dir=None, augment=False, take=None, seed=0,
         shuffle=None, standardize=True, manual_dir=None, drop_remainder=False):
    """Loads a tfds dataset as a batched, preprocessed `tf.data.Dataset`.

    Args:
        name: a key of `SUPPORTED` ("cifar10", "cifar100", "mnist", "fashion_mnist",
            "imagenet2012").
        split: tfds split expression, e.g. "train", "test", "train[:10%]".
        batch_size: examples per batch (positive int).
        data_dir: tfds data directory; None uses tfds's default (~/tensorflow_datasets).
        augment: apply the dataset's standard training augmentation
            (`info(name).augmentation`).
        take: keep only the first `take` examples of the split (before shuffling);
            None keeps all.
        seed: seed of the file order, the shuffle buffer and the augmentation; the
            order and the augmentation change every epoch but are reproducible.
        shuffle: shuffle examples; None means shuffle when `split` starts with "train".
        standardize: subtract the per-channel mean and divide by the standard
            deviation after scaling to [0, 1]; False keeps images in [0, 1].
        manual_dir: directory holding manually downloaded archives
            (imagenet2012).
        drop_remainder: drop the last incomplete batch (useful with
            `tf.distribute` strategies that need equal batches).

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 `[batch, *input_shape]`
        images and int64 `[batch]` labels, prefetched.

    Raises:
        ValueError: for an unsupported `name`, a non-positive `batch_size` or `take`.

    Example:
        >>> ds = load("fashion_mnist", "train", 128, augment=True, take=10_000)
        >>> images, labels = next(iter(ds))
    """
    spec = info(name)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    if take is not None and (not isinstance(take, int) or take < 1):
        raise ValueError(f"take must be a positive int or None. Received: take={take!r}")
    if shuffle is None:
        shuffle = split.startswith("train")
    if name == "fashion_mnist":
        _ensure_fashion_mnist(data_dir)
    download_config = (tfds.download.DownloadConfig(manual_dir=manual_dir)
                       if manual_dir else None)
    ds = tfds.load(
        name, split=split, data_dir=data_dir, as_supervised=True, shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed), download_and_prepare_kwargs=(
            {"download_config": download_config} if download_config else None))
    if take is not None:
        ds = ds.take(take)
    if not spec.manual_download:  # small datasets: decode once, keep in memory
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    preprocess = _make_preprocess(spec, augment, standardize)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda example, s: preprocess(example[0], example[1], s),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: preprocess(x, y, None), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _make_preprocess(spec, augment, standardize):
    """Returns `fn(image, label, seed) -> (image, label)` for one example."""
    height, width, _ = spec.input_shape
    mean = tf.constant(spec.mean, tf.float32)
    std = tf.constant(spec.std, tf.float32)
    flip = spec.name != "mnist"
    pad = 4 if spec.name.startswith("cifar") else 2

    def preprocess(image, label, seed):
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
        if spec.manual_download:
            image = _imagenet_crop(image, height, seed)
        elif augment:
            image = tf.image.pad_to_bounding_box(image, pad, pad, height + 2 * pad, width + 2 * pad)
            image = tf.image.stateless_random_crop(
                image, spec.input_shape, seed=tf.random.experimental.stateless_fold_in(seed, 0))
        if augment and flip:
            image = tf.image.stateless_random_flip_left_right(
                image, seed=tf.random.experimental.stateless_fold_in(seed, 1))
        if standardize:
            image = (image - mean) / std
        return image, label

    return preprocess


def _imagenet_crop(image, size, seed):
    """Random resized crop when `seed` is given, else resize-256 + central crop."""
    if seed is None:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = 256.0 / tf.reduce_min(shape)
        image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
        return tf.image.resize_with_crop_or_pad(image, size, size)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4]), seed=seed, area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    return tf.image.resize(image, (size, size))


def _ensure_fashion_mnist(data_dir):
    """Prepares Fashion-MNIST from the Debian files if tfds has not prepared it yet."""
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    if builder.is_prepared() or not all(
            os.path.exists(os.path.join(FASHION_MNIST_DEBIAN_DIR, u.filename))
            for u in builder.url_infos.values()):
        return
    try:
        prepare_fashion_mnist_offline(data_dir)
    except FileExistsError:  # another process (e.g. a parallel apps.compare run) finished first
        if not tfds.builder("fashion_mnist", data_dir=data_dir).is_prepared():
            raise


def prepare_fashion_mnist_offline(data_dir=None, source_dir=None):
    """Prepares tfds's `fashion_mnist` from local copies of the original files.

    The four idx files (`train-images-idx3-ubyte.gz`, ...) are copied into a
    temporary tfds download directory under the names tfds's download manager
    gives them (`get_dl_fname(url, checksum)`), each with the `.INFO` JSON tfds
    writes beside a download. tfds then finds every file "already downloaded"
    and `builder.download_and_prepare` builds the real 60,000/10,000 splits
    without any network access (~15-20 s). The staged copies are deleted
    afterwards: the prepared TFRecords are all `tfds.load` needs.

    Args:
        data_dir: tfds data directory to prepare into; None uses tfds's default.
        source_dir: directory with the four original `.gz` files; None uses
            `FASHION_MNIST_DEBIAN_DIR` (Debian package `dataset-fashion-mnist`).

    Returns:
        The directory of the prepared dataset version (str).

    Raises:
        FileNotFoundError: if a source file is missing (the message names it and
            the Debian package that provides it).

    Example:
        >>> prepare_fashion_mnist_offline("/tmp/tfds")
        >>> ds = tfds.load("fashion_mnist", split="test", data_dir="/tmp/tfds")
    """
    resource = _extras.require("tensorflow_datasets.core.download.resource", "tf_precrop.data")

    source_dir = source_dir or FASHION_MNIST_DEBIAN_DIR
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    url_infos = builder.url_infos
    missing = [u.filename for u in url_infos.values()
               if not os.path.exists(os.path.join(source_dir, u.filename))]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files missing in source_dir={source_dir!r}: {', '.join(missing)}. "
            "Install them with `apt-get install dataset-fashion-mnist` or pass the directory "
            "holding the original files.")
    with tempfile.TemporaryDirectory(prefix="fashion_mnist_download_") as download_dir:
        for url, url_info in url_infos.items():
            staged = os.path.join(download_dir, resource.get_dl_fname(url, url_info.checksum))
            shutil.copyfile(os.path.join(source_dir, url_info.filename), staged)
            with open(staged + ".INFO", "w") as f:
                json.dump({"urls": [url], "dataset_names": ["fashion_mnist"],
                           "original_fname": url_info.filename,
                           "url_info": url_info.asdict()}, f, sort_keys=True)
        builder.download_and_prepare(download_dir=download_dir)
    return os.fspath(builder.data_dir)
