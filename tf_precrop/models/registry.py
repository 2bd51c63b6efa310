"""Look up and build any keras.applications model or bundled CIFAR model by name."""

import inspect

import keras

from tf_precrop.models import _common
from tf_precrop.models.mobilenet import mobilenet_v2_cifar
from tf_precrop.models.resnet import resnet20, resnet32, resnet56

_BUNDLED = {
    "mobilenet_v2_cifar": mobilenet_v2_cifar,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
}


def _applications():
    """Maps lower-cased names to the model builders of the installed Keras.

    Read from `keras.applications` so that the list follows the Keras version
    (3.15 has 40 models); a model builder is a public function taking
    `include_top`, `weights` and `classes`.
    """
    builders = {}
    for attr in dir(keras.applications):
        builder = getattr(keras.applications, attr)
        if attr.startswith("_") or not inspect.isfunction(builder):
            continue
        if {"include_top", "weights", "classes"} <= inspect.signature(builder).parameters.keys():
            builders[attr.lower()] = builder
    return builders


def _key(name):
    return name.lower().replace("_", "").replace("-", "")


_APPLICATIONS = _applications()
# Bundled models win a (so far hypothetical) clash with a future Keras name.
_CANONICAL = {_key(n): n for n in [*_APPLICATIONS, *_BUNDLED]}


def canonical_name(name):
    """The name `build` knows ``name`` by, or None if it knows no such model.

    Args:
        name: any spelling: case-insensitive, ``_`` and ``-`` ignored.

    Returns:
        A name from `names()`, or None.

    Example:
        >>> canonical_name("MobileNet_V2"), canonical_name("resnet21")
        ('mobilenetv2', None)
    """
    return _CANONICAL.get(_key(name)) if isinstance(name, str) else None


def names():
    """Lists the canonical names accepted by `build`.

    Returns:
        Sorted list of lower-case names: the `keras.applications` models with
        their Keras spelling lower-cased (e.g. ``"efficientnetv2b0"``,
        ``"mobilenetv2"``) and the bundled ``"mobilenet_v2_cifar"``,
        ``"resnet20"``, ``"resnet32"``, ``"resnet56"``.

    Example:
        >>> "convnexttiny" in names() and "resnet20" in names()
        True
    """
    return sorted(_CANONICAL.values())


def build(name, input_shape=None, num_classes=None):
    """Builds a freshly initialised model by name (no pretrained weights).

    Names are matched case-insensitively with ``_`` and ``-`` ignored, so
    ``"mobilenet_v2"``, ``"MobileNetV2"`` and ``"mobilenetv2"`` are the same.
    `keras.applications` models are built with ``weights=None`` (works
    offline) and their classification head.

    Args:
        name: A name from `names()`, in any case, with or without ``_``/``-``.
        input_shape: Input shape (height, width, channels). None uses the
            model's own default: the builder's (224x224x3 for most
            applications, MobileNetV3 included, whose builder alone leaves it
            unset; 299x299x3 for InceptionV3, InceptionResNetV2 and Xception,
            331x331x3 for NASNetLarge) or 32x32x3 for bundled models.
        num_classes: Number of output classes. None uses 1000 for applications
            and 10 for bundled models.

    Returns:
        An uncompiled `keras.Model` with a softmax output.

    Raises:
        TypeError: If `name` is not a string.
        ValueError: If `name` is unknown, or `input_shape` or `num_classes` is
            invalid (including inputs too small for an application model).

    Example:
        >>> model = build("MobileNet_V2", input_shape=(64, 64, 3), num_classes=10)
        >>> model.output_shape
        (None, 10)
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str. Received: name={name!r}")
    canonical = canonical_name(name)
    if canonical is None:
        raise ValueError(f"Unknown model name: {name!r}. Supported: {', '.join(names())}")
    if input_shape is not None:
        input_shape = _common.check_input_shape(input_shape)
    if num_classes is not None:
        num_classes = _common.check_positive_int(num_classes, "num_classes")

    # Pass only what was given so each builder applies its own defaults.
    if canonical in _BUNDLED:
        kwargs = _given(input_shape=input_shape, num_classes=num_classes)
        return _BUNDLED[canonical](**kwargs)
    if input_shape is None and canonical in _FLEXIBLE_BY_DEFAULT:
        # These builders default to (None, None, 3); MACs need a fixed size, so use their documented 224.
        input_shape = (224, 224, 3)
    kwargs = _given(input_shape=input_shape, classes=num_classes)
    return _APPLICATIONS[canonical](weights=None, **kwargs)


#: keras.applications builders whose default input has no spatial size.
_FLEXIBLE_BY_DEFAULT = frozenset({"mobilenetv3small", "mobilenetv3large"})


def _given(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}
