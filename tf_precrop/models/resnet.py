"""CIFAR-style ResNets (He et al., 2016, Sec. 4.2): ResNet-20, -32 and -56.

Layer names are stable, so a crop plan or a mask computed on one instance
applies to any other instance of the same builder:

- stem: ``stem_conv``, ``stem_bn``, ``stem_relu``
- block ``b`` of stage ``s`` (both 1-based), prefix ``stage{s}_block{b}``:
  ``_conv1``, ``_bn1``, ``_relu1``, ``_conv2``, ``_bn2``, ``_add``, ``_out``;
  where the shape changes also ``_shortcut_conv`` and ``_shortcut_bn``
- head: ``avg_pool``, ``predictions``
"""

import keras

from tf_precrop.models import _common


def resnet20(input_shape=(32, 32, 3), num_classes=10, width=16, weight_decay=0.0, name=None):
    """Builds a CIFAR-style ResNet-20 (3 stages of 3 basic blocks).

    Args:
        input_shape: Input shape (height, width, channels), e.g. ``(28, 28, 1)``
            for Fashion-MNIST. Defaults to ``(32, 32, 3)`` (CIFAR-10).
        num_classes: Number of output classes. Defaults to 10.
        width: Filters of the first stage; stages 2 and 3 use ``2 * width``
            and ``4 * width``. Defaults to 16 (the paper's network).
        weight_decay: L2 factor added to the loss for every conv and dense
            kernel (``weight_decay * sum(w ** 2)``). Defaults to 0.0 (none).
        name: Model name. Defaults to ``"resnet20"``.

    Returns:
        An uncompiled `keras.Model` ending in a softmax `Dense` layer named
        ``"predictions"`` (outputs are probabilities, not logits).

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> model = resnet20(input_shape=(28, 28, 1))
        >>> model.count_params()
        273754
    """
    return _cifar_resnet(3, input_shape, num_classes, width, weight_decay, name or "resnet20")


def resnet32(input_shape=(32, 32, 3), num_classes=10, width=16, weight_decay=0.0, name=None):
    """Builds a CIFAR-style ResNet-32 (3 stages of 5 basic blocks).

    Args:
        input_shape: Input shape (height, width, channels). Defaults to
            ``(32, 32, 3)``.
        num_classes: Number of output classes. Defaults to 10.
        width: Filters of the first stage (then ``2 * width``, ``4 * width``).
            Defaults to 16.
        weight_decay: L2 factor for every conv and dense kernel. Defaults to 0.0.
        name: Model name. Defaults to ``"resnet32"``.

    Returns:
        An uncompiled `keras.Model` with a softmax output layer ``"predictions"``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> model = resnet32(num_classes=100)
        >>> model.output_shape
        (None, 100)
    """
    return _cifar_resnet(5, input_shape, num_classes, width, weight_decay, name or "resnet32")


def resnet56(input_shape=(32, 32, 3), num_classes=10, width=16, weight_decay=0.0, name=None):
    """Builds a CIFAR-style ResNet-56 (3 stages of 9 basic blocks).

    Args:
        input_shape: Input shape (height, width, channels). Defaults to
            ``(32, 32, 3)``.
        num_classes: Number of output classes. Defaults to 10.
        width: Filters of the first stage (then ``2 * width``, ``4 * width``).
            Defaults to 16.
        weight_decay: L2 factor for every conv and dense kernel. Defaults to 0.0.
        name: Model name. Defaults to ``"resnet56"``.

    Returns:
        An uncompiled `keras.Model` with a softmax output layer ``"predictions"``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> model = resnet56(weight_decay=1e-4)
        >>> len(model.losses)  # 55 3x3 convs, 2 shortcut convs, 1 dense
        58
    """
    return _cifar_resnet(9, input_shape, num_classes, width, weight_decay, name or "resnet56")


def _cifar_resnet(blocks_per_stage, input_shape, num_classes, width, weight_decay, name):
    input_shape = _common.check_input_shape(input_shape)
    num_classes = _common.check_positive_int(num_classes, "num_classes")
    width = _common.check_positive_int(width, "width")
    regularizer = _common.l2_regularizer(weight_decay)
    axis = _common.channel_axis()

    def conv(filters, kernel_size, strides, layer_name):
        return _common.conv2d(filters, kernel_size, strides, layer_name, regularizer)

    inputs = keras.Input(shape=input_shape, name="input")
    x = conv(width, 3, 1, "stem_conv")(inputs)
    x = _common.batch_norm("stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)

    for stage in range(1, 4):
        filters = width * 2 ** (stage - 1)
        for block in range(1, blocks_per_stage + 1):
            prefix = f"stage{stage}_block{block}"
            # Stages 2 and 3 halve the resolution in their first block.
            strides = 2 if stage > 1 and block == 1 else 1
            y = conv(filters, 3, strides, f"{prefix}_conv1")(x)
            y = _common.batch_norm(f"{prefix}_bn1")(y)
            y = keras.layers.Activation("relu", name=f"{prefix}_relu1")(y)
            y = conv(filters, 3, 1, f"{prefix}_conv2")(y)
            y = _common.batch_norm(f"{prefix}_bn2")(y)
            shortcut = x
            if strides != 1 or x.shape[axis] != filters:
                # Option B of the paper: a 1x1 projection where the shape changes.
                shortcut = conv(filters, 1, strides, f"{prefix}_shortcut_conv")(x)
                shortcut = _common.batch_norm(f"{prefix}_shortcut_bn")(shortcut)
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.Activation("relu", name=f"{prefix}_out")(x)

    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _common.classifier(num_classes, regularizer)(x)
    return keras.Model(inputs, outputs, name=name)
