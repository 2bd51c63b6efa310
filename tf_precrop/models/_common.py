"""Argument checks and layer settings shared by the bundled model builders."""

import numbers

import keras


def check_input_shape(input_shape):
    """Returns `input_shape` as a tuple of three positive ints or raises ValueError."""
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(_is_positive_int(d) for d in input_shape)
    ):
        raise ValueError(
            "`input_shape` must be three positive ints (height, width, channels "
            "in keras.config.image_data_format() order). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in input_shape)


def check_positive_int(value, arg):
    """Returns `value` as an int if it is a positive int, else raises ValueError."""
    if not _is_positive_int(value):
        raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")
    return int(value)


def check_positive_float(value, arg):
    """Returns `value` as a float if it is a finite positive number, else raises."""
    if not _is_real(value) or not 0 < value < float("inf"):
        raise ValueError(
            f"`{arg}` must be a positive number. Received: {arg}={value!r}"
        )
    return float(value)


def l2_regularizer(weight_decay):
    """Returns an L2 kernel regularizer, or None when `weight_decay` is 0."""
    if not _is_real(weight_decay) or not 0 <= weight_decay < float("inf"):
        raise ValueError(
            "`weight_decay` must be a non-negative number. "
            f"Received: weight_decay={weight_decay!r}"
        )
    # None rather than L2(0.0): no zero-valued loss terms in `model.losses`.
    return keras.regularizers.L2(float(weight_decay)) if weight_decay else None


def channel_axis():
    """The channel axis for keras.config.image_data_format() (for BatchNorm)."""
    return 1 if keras.config.image_data_format() == "channels_first" else -1


def conv2d(filters, kernel_size, strides, name, regularizer):
    """A he_normal "same"-padded Conv2D without bias (a BatchNorm follows)."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name=name,
    )


def batch_norm(name):
    """BatchNormalization with the Torch defaults of the CIFAR reference code.

    Momentum 0.9 (Keras: 0.99) lets the moving statistics settle within the
    short training runs used on CIFAR-sized data.
    """
    return keras.layers.BatchNormalization(
        axis=channel_axis(), momentum=0.9, epsilon=1e-5, name=name
    )


def classifier(num_classes, regularizer):
    """The softmax output layer, named "predictions" like keras.applications."""
    return keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name="predictions",
    )


def _is_positive_int(value):
    # bool is an int subclass, but `width=True` is a mistake, not a width of 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
