"""Tests for tf_precrop.models: bundled CIFAR builders and the build()/names() registry."""

import re

import keras
import numpy as np
import pytest

from tf_precrop import models


def resnet_params(blocks, width=16, channels=3, classes=10):
    """Parameter count of a CIFAR ResNet with 3 stages of `blocks` blocks, by hand.

    Convs have no bias; each BatchNorm holds 4 values per channel (gamma, beta,
    moving mean, moving variance); w = width, c = input channels, k = classes.
      stem            3x3 conv c->w + BN(w)                     9cw + 4w
      stage 1 block   2 x (3x3 conv w->w + BN(w))               18w^2 + 8w
      stage 2 block 1 3x3 w->2w, 3x3 2w->2w, 2 BN(2w),
                      1x1 shortcut w->2w + BN(2w)               56w^2 + 24w
      stage 2 other   2 x (3x3 conv 2w->2w + BN(2w))            72w^2 + 16w
      stage 3 block 1 3x3 2w->4w, 3x3 4w->4w, 2 BN(4w),
                      1x1 shortcut 2w->4w + BN(4w)              224w^2 + 48w
      stage 3 other   2 x (3x3 conv 4w->4w + BN(4w))            288w^2 + 32w
      dense           4w->k with bias                           4wk + k
    """
    w, c, k, n = width, channels, classes, blocks
    return (
        9 * c * w + 4 * w
        + n * (18 * w**2 + 8 * w)
        + 56 * w**2 + 24 * w + (n - 1) * (72 * w**2 + 16 * w)
        + 224 * w**2 + 48 * w + (n - 1) * (288 * w**2 + 32 * w)
        + 4 * w * k + k
    )


def auto_layer_name(class_name):
    """Keras's default layer name for a class, e.g. "DepthwiseConv2D" -> "depthwise_conv2d"."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def count_layers(model, cls, kernel_size=None):
    return sum(
        type(layer) is cls and (kernel_size is None or layer.kernel_size == kernel_size)
        for layer in model.layers
    )


@pytest.mark.parametrize(
    "input_shape, expected",
    [
        # 9*3*16 + 4*16 + 3*(18*256 + 128) + (56*256 + 384) + 2*(72*256 + 256)
        #   + (224*256 + 768) + 2*(288*256 + 512) + 64*10 + 10 = 274,042
        ((32, 32, 3), 274_042),
        # Only the stem's input channels differ: 274,042 - 9*2*16 = 273,754
        ((28, 28, 1), 273_754),
    ],
)
def test_resnet20_param_count_matches_hand_formula(input_shape, expected):
    model = models.resnet20(input_shape=input_shape)
    assert expected == resnet_params(3, width=16, channels=input_shape[-1])
    assert model.count_params() == expected
    # Moving mean and variance of 784 BatchNorm channels
    # (16 + 6*16 + 7*32 + 7*64) are the only non-trainable weights.
    non_trainable = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    assert non_trainable == 2 * 784


@pytest.mark.parametrize(
    "builder, blocks, convs3x3",
    [(models.resnet20, 3, 19), (models.resnet32, 5, 31), (models.resnet56, 9, 55)],
)
def test_resnet_depth(builder, blocks, convs3x3):
    model = builder()
    # Depth 6n+2 counts the 3x3 convs and the dense layer; option B adds two
    # 1x1 projection shortcuts where stages 2 and 3 change shape.
    assert count_layers(model, keras.layers.Conv2D, (3, 3)) == convs3x3
    assert count_layers(model, keras.layers.Conv2D, (1, 1)) == 2
    assert count_layers(model, keras.layers.Dense) == 1
    assert count_layers(model, keras.layers.Add) == 3 * blocks
    assert [layer.name for layer in model.layers if "shortcut_conv" in layer.name] == [
        "stage2_block1_shortcut_conv",
        "stage3_block1_shortcut_conv",
    ]
    assert model.count_params() == resnet_params(blocks)
    assert model.name == builder.__name__


@pytest.mark.parametrize("size, stage_sizes", [(32, (32, 16, 8)), (28, (28, 14, 7))])
def test_resnet_stage_shapes_and_width(size, stage_sizes):
    model = models.resnet20(input_shape=(size, size, 1), num_classes=7, width=8)
    for stage, (side, filters) in enumerate(zip(stage_sizes, (8, 16, 32)), start=1):
        output = model.get_layer(f"stage{stage}_block3_out").output
        assert output.shape == (None, side, side, filters)
    assert model.output_shape == (None, 7)
    assert model.count_params() == resnet_params(3, width=8, channels=1, classes=7)


@pytest.mark.parametrize("builder", [models.resnet20, models.mobilenet_v2_cifar])
def test_every_layer_is_named(builder):
    # Keras names unnamed layers after their class and numbers them globally
    # ("conv2d_7"): such names would differ between two builds of one model.
    for layer in builder(input_shape=(8, 8, 3)).layers:
        auto_name = auto_layer_name(type(layer).__name__)
        assert not layer.name.startswith(auto_name), layer.name


def test_resnet_layer_names():
    names = [layer.name for layer in models.resnet20().layers]
    assert names[:4] == ["input", "stem_conv", "stem_bn", "stem_relu"]
    assert names[-2:] == ["avg_pool", "predictions"]
    assert "stage2_block1_conv1" in names and "stage1_block1_shortcut_conv" not in names


def test_weight_decay_regularizes_every_kernel():
    assert models.resnet20().losses == []
    model = models.resnet20(input_shape=(8, 8, 3), width=4, weight_decay=1e-4)
    assert len(model.losses) == 19 + 2 + 1
    kernels = [
        layer.kernel
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    ]
    expected = 1e-4 * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_mobilenet_v2_cifar_matches_keras_mobilenet_v2():
    model = models.mobilenet_v2_cifar()
    reference = keras.applications.MobileNetV2(weights=None, classes=10, input_shape=(32, 32, 3))
    # Same blocks and widths as Keras's MobileNetV2; only strides differ.
    assert model.count_params() == reference.count_params() == 2_270_794
    assert count_layers(model, keras.layers.DepthwiseConv2D) == 17
    assert count_layers(model, keras.layers.Add) == 10
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert model.get_layer("block2_depthwise").output.shape == (None, 32, 32, 96)
    assert model.get_layer("head_relu").output.shape == (None, 4, 4, 1280)
    assert model.output_shape == (None, 10)


def test_mobilenet_v2_cifar_alpha_and_grayscale():
    model = models.mobilenet_v2_cifar(input_shape=(28, 28, 1), num_classes=3, alpha=0.5)
    assert model.get_layer("stem_conv").filters == 16
    assert model.get_layer("block2_expand").filters == 48  # 8 channels * 6
    assert model.get_layer("block17_project").filters == 160
    assert model.get_layer("head_conv").filters == 1280  # never shrunk below 1280
    assert model.get_layer("head_relu").output.shape == (None, 4, 4, 1280)
    assert model.output_shape == (None, 3)
    assert "block1_expand" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "model",
    [
        lambda: models.resnet20(input_shape=(8, 8, 3), width=4),
        lambda: models.mobilenet_v2_cifar(input_shape=(8, 8, 3), alpha=0.35),
    ],
    ids=["resnet20", "mobilenet_v2_cifar"],
)
def test_forward_pass_gives_probabilities(model):
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(model()(x, training=False))
    assert y.shape == (2, 10)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(y >= 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "`num_classes` must be a positive int. Received: num_classes=0"),
        ({"width": 2.5}, "`width` must be a positive int. Received: width=2.5"),
        ({"width": True}, "`width` must be a positive int. Received: width=True"),
        (
            {"weight_decay": -1e-4},
            "`weight_decay` must be a non-negative number. Received: weight_decay=-0.0001",
        ),
        ({"input_shape": (32, 32)}, "Received: input_shape=(32, 32)"),
        ({"input_shape": (32, 0, 3)}, "Received: input_shape=(32, 0, 3)"),
    ],
)
def test_resnet_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        models.resnet20(**kwargs)
    assert message in str(error.value)


def test_mobilenet_rejects_bad_alpha():
    with pytest.raises(ValueError, match=r"`alpha` must be a positive number. Received: alpha=0$"):
        models.mobilenet_v2_cifar(alpha=0)


def test_names():
    names = models.names()
    assert names == sorted(set(names))
    assert {"resnet20", "resnet32", "resnet56", "mobilenet_v2_cifar"} <= set(names)
    # Read from keras.applications: Keras 3.15 has 40 models (no RegNet).
    assert {
        "convnexttiny", "densenet121", "efficientnetb0", "efficientnetv2s", "inceptionresnetv2",
        "inceptionv3", "mobilenet", "mobilenetv2", "mobilenetv3small", "nasnetlarge",
        "resnet50", "resnet152v2", "vgg16", "xception",
    } <= set(names)
    assert len(names) >= 44
    assert not any(name.startswith("regnet") for name in names)


@pytest.mark.parametrize("name", ["resnet20", "RESNET_20", "res-net_20"])
def test_build_normalises_bundled_names(name):
    model = models.build(name)
    assert model.name == "resnet20"
    assert (model.input_shape, model.output_shape) == ((None, 32, 32, 3), (None, 10))
    assert model.count_params() == 274_042


@pytest.mark.parametrize("name", ["MobileNetV2", "mobilenet_v2", "Mobile-Net-V2"])
def test_build_normalises_application_names(name):
    model = models.build(name, input_shape=(64, 64, 3), num_classes=7)
    assert model.name == "mobilenetv2_1.00_64"
    assert (model.input_shape, model.output_shape) == ((None, 64, 64, 3), (None, 7))
    # Keras's MobileNetV2 is 3,538,984 params with its 1000-class head
    # (1280*1000 + 1000), so 2,257,984 without it.
    assert model.count_params() == 2_257_984 + 1280 * 7 + 7


def test_build_defaults():
    model = models.build("mobilenet_v2_cifar", input_shape=(28, 28, 1))
    assert (model.input_shape, model.output_shape) == ((None, 28, 28, 1), (None, 10))
    # No input_shape passed: the application uses its own default size
    # (224 here; 299 for InceptionV3, 331 for NASNetLarge).
    model = models.build("mobilenet")
    assert (model.input_shape, model.output_shape) == ((None, 224, 224, 3), (None, 1000))


def test_build_rejects_unknown_name():
    with pytest.raises(ValueError) as error:
        models.build("foo")
    assert str(error.value) == "Unknown model name: 'foo'. Supported: " + ", ".join(models.names())


def test_build_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"^`name` must be a str. Received: name=20$"):
        models.build(20)
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        models.build("resnet50", num_classes=0)
    with pytest.raises(ValueError, match=re.escape("Received: input_shape=(16, 16, 3)")):
        models.build("resnet50", input_shape=(16, 16, 3))  # Keras's own minimum size check


def test_mobilenet_v3_default_input_is_fixed():
    # keras.applications.MobileNetV3* default to (None, None, 3), which no MAC count can use.
    model = models.build("mobilenet_v3_small")
    assert model.input_shape == (None, 224, 224, 3)
