"""MobileNetV2 (Sandler et al., 2018) adapted to 32x32 inputs such as CIFAR-10.

Same blocks, widths and parameter count as `keras.applications.MobileNetV2`,
but the stem convolution and the first 24-channel block keep stride 1, so the
network downsamples 8x instead of 32x (32x32 -> 4x4 before pooling).

Layer names: ``stem_conv``/``_bn``/``_relu``; for inverted residual block
``i`` (1-based) ``block{i}_expand``/``_expand_bn``/``_expand_relu`` (absent
in block 1, whose expansion factor is 1), ``block{i}_depthwise``/
``_depthwise_bn``/``_depthwise_relu``, ``block{i}_project``/``_project_bn``
and ``block{i}_add`` where the block is residual; then ``head_conv``/``_bn``/
``_relu``, ``avg_pool``, ``predictions``.
"""

import keras

from tf_precrop.models import _common

# (expansion factor t, output channels c, repeats n, stride of the first repeat s),
# Table 2 of the paper with the strides of the 2nd row (and the stem) set to 1.
_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280


def mobilenet_v2_cifar(
    input_shape=(32, 32, 3), num_classes=10, alpha=1.0, weight_decay=0.0, name=None
):
    """Builds MobileNetV2 for small images (stride-1 stem, 8x downsampling).

    Inverted residual blocks: 1x1 expansion conv, 3x3 depthwise conv, 1x1
    linear projection, each followed by BatchNorm, ReLU6 after the first two,
    and an `Add` shortcut when a block keeps stride 1 and its width.

    Args:
        input_shape: Input shape (height, width, channels), e.g. ``(28, 28, 1)``
            for Fashion-MNIST. Defaults to ``(32, 32, 3)``.
        num_classes: Number of output classes. Defaults to 10.
        alpha: Width multiplier; layer widths are ``alpha`` times the paper's,
            rounded to multiples of 8 as in `keras.applications.MobileNetV2`.
            Defaults to 1.0.
        weight_decay: L2 factor for every conv and dense kernel except the
            depthwise ones, which are not decayed (as in the reference
            TF-Slim training setup). Defaults to 0.0 (none).
        name: Model name. Defaults to ``"mobilenet_v2_cifar"``.

    Returns:
        An uncompiled `keras.Model` ending in a softmax `Dense` layer named
        ``"predictions"`` (outputs are probabilities, not logits).

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> model = mobilenet_v2_cifar(alpha=0.5)
        >>> model.get_layer("block2_depthwise").output.shape
        (None, 32, 32, 48)
    """
    input_shape = _common.check_input_shape(input_shape)
    num_classes = _common.check_positive_int(num_classes, "num_classes")
    alpha = _common.check_positive_float(alpha, "alpha")
    regularizer = _common.l2_regularizer(weight_decay)
    axis = _common.channel_axis()

    def conv(filters, kernel_size, strides, layer_name):
        return _common.conv2d(filters, kernel_size, strides, layer_name, regularizer)

    def relu6(layer_name):
        return keras.layers.ReLU(6.0, name=layer_name)

    inputs = keras.Input(shape=input_shape, name="input")
    x = conv(_make_divisible(_STEM_FILTERS * alpha), 3, 1, "stem_conv")(inputs)
    x = _common.batch_norm("stem_bn")(x)
    x = relu6("stem_relu")(x)

    index = 0
    for expansion, channels, repeats, first_stride in _BLOCKS:
        filters = _make_divisible(int(channels * alpha))
        for repeat in range(repeats):
            index += 1
            prefix = f"block{index}"
            strides = first_stride if repeat == 0 else 1
            in_filters = x.shape[axis]
            y = x
            if expansion != 1:
                y = conv(in_filters * expansion, 1, 1, f"{prefix}_expand")(y)
                y = _common.batch_norm(f"{prefix}_expand_bn")(y)
                y = relu6(f"{prefix}_expand_relu")(y)
            y = keras.layers.DepthwiseConv2D(
                3,
                strides=strides,
                padding="same",
                use_bias=False,
                depthwise_initializer="he_normal",
                name=f"{prefix}_depthwise",
            )(y)
            y = _common.batch_norm(f"{prefix}_depthwise_bn")(y)
            y = relu6(f"{prefix}_depthwise_relu")(y)
            # Linear bottleneck: no activation after the projection.
            y = conv(filters, 1, 1, f"{prefix}_project")(y)
            y = _common.batch_norm(f"{prefix}_project_bn")(y)
            if strides == 1 and in_filters == filters:
                y = keras.layers.Add(name=f"{prefix}_add")([x, y])
            x = y

    # Like Keras, never shrink the last conv below 1280 (it feeds the classifier).
    head_filters = _make_divisible(_HEAD_FILTERS * alpha) if alpha > 1.0 else _HEAD_FILTERS
    x = conv(head_filters, 1, 1, "head_conv")(x)
    x = _common.batch_norm("head_bn")(x)
    x = relu6("head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _common.classifier(num_classes, regularizer)(x)
    return keras.Model(inputs, outputs, name=name or "mobilenet_v2_cifar")


def _make_divisible(value, divisor=8):
    """Rounds a width to the nearest multiple of `divisor`, losing at most 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
