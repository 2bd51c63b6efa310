"""count / plan / crop / preconfig on keras_hub image backbones and task models (tiny configs, 32 px).

Presets cannot be downloaded here, so every backbone is built from constructor arguments.
"""

import os

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import tf_precrop  # noqa: E402
from tf_precrop.graph import keras_hub_rules  # noqa: E402

H = keras_hub.models
SHAPE = (32, 32, 3)


def resnet(pre_activation=False):
    return H.ResNetBackbone(input_conv_filters=[16], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
                            stackwise_num_blocks=[2, 1], stackwise_num_strides=[1, 2],
                            block_type="bottleneck_block", use_pre_activation=pre_activation, image_shape=SHAPE)


def cspnet():
    return H.CSPNetBackbone(stem_filters=16, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
                            stackwise_strides=[2, 2], stackwise_num_filters=[32, 64], block_type="dark_block",
                            stage_type="csp", bottle_ratio=[0.5], block_ratio=[1.0], expand_ratio=[2.0],
                            image_shape=SHAPE)


def mobilenet():
    """MobileNetV3-style: a depthwise block with squeeze-excite, inverted residuals with and without SE, one
    stride-1 block whose widths differ (it must not gain a residual)."""
    return H.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 96]], stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 32]], stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]], stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]], stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=64, depthwise_filters=8, depthwise_stride=2, depthwise_residual=False,
        last_layer_filter=64, squeeze_and_excite=0.5, image_shape=SHAPE, input_num_filters=16)


def efficientnet_v1():
    return H.EfficientNetBackbone(
        width_coefficient=1.0, depth_coefficient=1.0, stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 2],
        stackwise_input_filters=[16, 16], stackwise_output_filters=[16, 24], stackwise_expansion_ratios=[1, 6],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "v1"], input_shape=SHAPE, num_features=64)


def efficientnet_v2():
    """Fused MBConv stages and an unfused (MBConv with squeeze-excite) one."""
    return H.EfficientNetBackbone(
        width_coefficient=1.0, depth_coefficient=1.0, stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 2, 2], stackwise_input_filters=[16, 16, 24],
        stackwise_output_filters=[16, 24, 32], stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25], stackwise_strides=[1, 2, 2],
        stackwise_block_types=["fused", "fused", "unfused"], include_stem_padding=False, input_shape=SHAPE,
        num_features=64)


def densenet():
    return H.DenseNetBackbone(stackwise_num_repeats=[2, 2], compression_ratio=0.5, growth_rate=8, image_shape=SHAPE)


def vgg():
    return H.VGGBackbone(stackwise_num_repeats=[1, 1, 2], stackwise_num_filters=[8, 16, 32], image_shape=SHAPE)


def deeplab(encoder=None):
    return H.DeepLabV3Backbone(image_encoder=encoder or resnet(), spatial_pyramid_pooling_key="P3",
                               upsampling_size=2, dilation_rates=[2, 4], low_level_feature_key="P2",
                               projection_filters=8, image_shape=SHAPE)


FAMILIES = {
    "resnet_v1": resnet,
    "resnet_v2": lambda: resnet(pre_activation=True),
    "cspnet": cspnet,
    "mobilenet_v3": mobilenet,
    "efficientnet_v1": efficientnet_v1,
    "efficientnet_v2": efficientnet_v2,
    "densenet": densenet,
    "vgg": vgg,
    "deeplab_v3": deeplab,
}



def structure(model) -> list:
    """Every operation (class and name) of the model and its nested models, with each block's residual."""
    rows = []
    for op in model.operations:
        if isinstance(op, keras.Model):
            rows.extend(structure(op))
        else:
            rows.append((type(op).__name__, op.name, keras_hub_rules.adds_residual(op)))
    return rows


def check_exact(model, plan, small):
    """The rebuilt model costs what the plan says, layer by layer, and keeps every block's structure."""
    recount = tf_precrop.count(small)
    assert {lc.name: (lc.macs, lc.params) for lc in recount.layers} == {
        lp.name: (lp.macs, lp.params) for lp in plan.layers}
    assert small.count_params() == plan.params
    assert structure(small) == structure(model)
    x = np.random.default_rng(0).random((1,) + SHAPE, dtype=np.float32)
    assert keras.tree.map_structure(lambda t: t.shape[:-1], small(x)) == keras.tree.map_structure(
        lambda t: t.shape[:-1], model(x))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_counts_plans_and_crops_exactly(family):
    model = FAMILIES[family]()
    report = tf_precrop.count(model)
    assert report.params == model.count_params()
    assert report.macs > 0
    plan = tf_precrop.plan(model, flops=0.5)
    assert 0.4 <= plan.macs_ratio <= 0.5
    small = tf_precrop.crop(model, plan, seed=0)
    check_exact(model, plan, small)
    assert small.count_params() < model.count_params()
    # PreConfig grows some widths: block formulas (adjust_channels, se ratios) must stay exact upwards too.
    wide_plan = tf_precrop.preconfig_plan(model, flops=1.0)
    check_exact(model, wide_plan, tf_precrop.crop(model, wide_plan, seed=0))


def test_mobilenet_blocks_keep_their_residuals_and_rounding():
    model = mobilenet()
    plan = tf_precrop.plan(model, params=0.6)
    small = tf_precrop.crop(model, plan, seed=0)
    check_exact(model, plan, small)
    before = [r for r in structure(model) if r[2] is not None]
    assert [r[1] for r in before if r[2]] == ["block_1_1"]  # 16 -> 16 at stride 1
    for name in ("block_1_1", "block_2_1"):
        block = small.get_layer(name)
        assert block.expansion % 8 == 0  # adjust_channels leaves it as is
        assert keras_hub_rules._adjust_channels(block.expansion) == block.conv1.filters
    # block_2_1 (24 -> 32, stride 1) has no residual and keeps unequal widths at their 3:4 proportion.
    b = small.get_layer("block_2_1").get_config()
    assert b["infilters"] * 4 == b["filters"] * 3


def test_preconfig_on_efficientnet_v2():
    model = efficientnet_v2()
    p = tf_precrop.preconfig_plan(model, flops=1.0)
    small = tf_precrop.preconfig(model, flops=1.0, seed=0)
    check_exact(model, p, small)
    assert p.macs_ratio >= 0.98


def test_cropped_backbone_keeps_pyramid_outputs_and_feeds_deeplab():
    backbone = resnet()
    small = tf_precrop.crop(backbone, flops=0.5, seed=0)
    assert isinstance(small, keras.Model) and not isinstance(small, H.Backbone)
    assert set(small.pyramid_outputs) == set(backbone.pyramid_outputs) == {"P2", "P3"}
    for level, tensor in small.pyramid_outputs.items():
        assert tensor.shape[:-1] == backbone.pyramid_outputs[level].shape[:-1]
    seg = deeplab(encoder=small)  # a keras_hub task backbone built on the cropped encoder
    assert tf_precrop.count(seg).params == seg.count_params()


def test_image_classifier_crops_trains_and_round_trips(tmp_path):
    clf = H.ImageClassifier(backbone=mobilenet(), num_classes=3)
    plan = tf_precrop.plan(clf, flops=0.5)
    small = tf_precrop.crop(clf, plan, seed=0)
    check_exact(clf, plan, small)
    small.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((4,) + SHAPE, dtype=np.float32)
    history = small.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.count_params() == plan.params
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-5)
