"""Channel groups on the topologies that break other pruning tools: adds, concats, SE, depthwise,
nested models, shared layers, grouped convs, Flatten/Reshape."""

import keras
import numpy as np

import tf_precrop
from tf_precrop.graph.walker import ModelGraph


def _crop_checks(model, flops=0.5, **kwargs):
    plan = tf_precrop.plan(model, flops=flops, **kwargs)
    small = tf_precrop.crop(model, plan, seed=0)
    x = np.random.default_rng(0).random((2,) + tuple(model.input_shape[1:]), dtype=np.float32)
    assert small(x).shape == model(x).shape
    assert small.count_params() == plan.params
    assert tf_precrop.count(small).macs == plan.macs
    assert plan.macs_ratio <= flops
    return plan, small


def test_resnet20_residual_stream_stays_equal_and_trains():
    model = tf_precrop.models.resnet20(input_shape=(16, 16, 3), width=16)
    plan, small = _crop_checks(model)
    assert plan.macs_ratio >= 0.45
    widths = {lp.name: lp.width for lp in plan.layers}
    # Every block of a stage adds into one residual stream: its width is one group.
    for stage in (1, 2, 3):
        stream = {widths[name] for name in widths if name.startswith(f"stage{stage}_") and name.endswith("_add")}
        assert len(stream) == 1, (stage, stream)
    small.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = small.fit(np.zeros((4, 16, 16, 3), "float32"), np.zeros(4, "int32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_concat_is_a_composite_of_its_inputs():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(32, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(64, 3, padding="same", name="b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.Conv2D(48, 1, name="after")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="fc")(x))
    plan, small = _crop_checks(model)
    assert small.get_layer("cat").output.shape[-1] == plan.widths["a"] + plan.widths["b"]
    roots = {lp.name: lp.group for lp in plan.layers}
    assert roots["a"] != roots["b"]  # concat inputs are independent groups


def test_squeeze_excite_gate_ties_to_the_gated_tensor():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="conv")(inputs)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = keras.layers.Conv2D(8, 1, activation="relu", name="se_reduce")(s)
    s = keras.layers.Conv2D(32, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply(name="gate")([x, s])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    plan, _ = _crop_checks(model)
    assert plan.widths["conv"] == plan.widths["se_expand"]


def test_depthwise_multiplier_tied_through_add():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 1, name="c1")(inputs)
    d = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    y = keras.layers.Conv2D(32, 1, name="c2")(x)
    x = keras.layers.Add(name="add")([d, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    plan, _ = _crop_checks(model)
    assert plan.widths["c2"] == 2 * plan.widths["c1"]


def test_nested_model_is_rebuilt_and_classifier_kept():
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    plan, small = _crop_checks(model)
    nested = small.get_layer(base.name)
    assert isinstance(nested, keras.Model)
    assert nested is not base
    assert plan.widths["head"] == 3
    assert any(name.startswith(base.name + "/") for name in plan.updates)


def test_nested_model_called_twice_shares_widths():
    block_in = keras.Input((8, 8, 16))
    block = keras.Model(block_in, keras.layers.Conv2D(16, 3, padding="same", name="inner")(block_in), name="block")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 1, name="stem")(inputs)
    x = block(block(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    plan, small = _crop_checks(model, flops=0.6)
    assert plan.widths["stem"] == plan.widths["block/inner"]
    assert [layer.name for layer in small.layers].count("block") == 1


def test_shared_layer_stays_shared():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(32, 3, padding="same", name="shared")
    stem = keras.layers.Conv2D(32, 1, name="stem")(inputs)
    x = conv(conv(stem))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    plan, small = _crop_checks(model)
    assert plan.widths["stem"] == plan.widths["shared"]
    # A shared layer's MACs count once per call.
    dense = tf_precrop.count(model).layer("shared")
    assert dense.macs == 2 * 8 * 8 * 9 * 32 * 32


def test_grouped_conv_keeps_widths_divisible():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(64, 1, name="c1")(inputs)
    x = keras.layers.Conv2D(64, 3, padding="same", groups=8, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    plan, _ = _crop_checks(model)
    assert plan.widths["c1"] % 8 == 0 and plan.widths["grouped"] % 8 == 0
    dense = tf_precrop.count(model).layer("grouped")
    assert dense.macs == 8 * 8 * 3 * 3 * (64 // 8) * 64


def test_convnext_depthwise_groups_follow_width():
    model = keras.applications.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, include_preprocessing=False)
    plan, small = _crop_checks(model)
    dw = small.get_layer("convnext_tiny_stage_0_block_0_depthwise_conv")
    assert dw.groups == dw.filters == plan.layer("convnext_tiny_stage_0_block_0_depthwise_conv").width
    scale = small.get_layer("convnext_tiny_stage_0_block_0_layer_scale")
    assert scale.projection_dim == dw.filters


def test_flatten_dense_and_se_reshape():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="conv")(inputs)
    s = keras.layers.GlobalAveragePooling2D()(x)
    s = keras.layers.Reshape((1, 1, 32), name="se_reshape")(s)
    s = keras.layers.Conv2D(32, 1, activation="sigmoid", name="se")(s)
    x = keras.layers.Multiply()([x, s])
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    plan, small = _crop_checks(model)
    assert small.get_layer("se_reshape").target_shape == (1, 1, plan.widths["conv"])
    assert small.get_layer("fc").kernel.shape[0] == 16 * plan.widths["conv"]


def test_sequential_model():
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(32, 3, name="c1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Conv2D(64, 3, name="c2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, name="fc"),
    ], name="seq")
    plan, small = _crop_checks(model)
    assert isinstance(small, keras.Sequential)
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]


def test_multi_output_model_keeps_every_output():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, name="trunk")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out_a = keras.layers.Dense(3, name="a")(x)
    out_b = keras.layers.Dense(5, name="b")(x)
    model = keras.Model(inputs, [out_a, out_b])
    plan = tf_precrop.plan(model, flops=0.5)
    small = tf_precrop.crop(model, plan)
    ya, yb = small(np.zeros((1, 8, 8, 3), "float32"))
    assert ya.shape == (1, 3) and yb.shape == (1, 5)


def test_ignored_layer_keeps_its_widths():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, name="c1")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = keras.layers.Conv2D(64, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    plan = tf_precrop.plan(model, flops=0.7, ignored_layers=["double"])
    assert plan.widths["c1"] == 32  # the Lambda's input is fixed
    assert plan.widths["c2"] < 64
    graph = ModelGraph(model, ignored_layers=["double"])
    assert "ignored_layers" in graph.groups.pinned(graph.records["c1"].produced)


def _concat_then(kind):
    inputs = keras.Input((16, 16, 3))
    stem = keras.layers.Conv2D(16, 1, name="stem")(inputs)
    a = keras.layers.Conv2D(16, 1, name="a")(stem)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(stem)
    x = keras.layers.Concatenate(name="cat")([a, b])
    if kind == "se":
        g = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
        g = keras.layers.Conv2D(8, 1, name="reduce")(g)
        g = keras.layers.Conv2D(32, 1, activation="sigmoid", name="expand")(g)
        x = keras.layers.Multiply(name="gate")([x, g])
    elif kind == "add":
        x = keras.layers.Add(name="add")([x, keras.layers.Conv2D(32, 1, name="other")(stem)])
    else:
        x = keras.layers.Conv2D(16, 3, groups=2, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def test_gate_over_a_concat_ties_segments_to_one_ratio():
    """A squeeze-excite gate over a concatenation: both concat parts and the gate keep one shared ratio,
    so the product stays well formed while every width shrinks (no group is pinned)."""
    plan, _ = _crop_checks(_concat_then("se"))
    assert plan.macs_ratio >= 0.45
    assert plan.widths["expand"] == plan.widths["a"] + plan.widths["stem"]  # dw follows the stem
    assert plan.widths["a"] < 16


def test_add_of_a_concat_and_a_conv():
    plan, _ = _crop_checks(_concat_then("add"))
    assert plan.widths["other"] == plan.widths["a"] + plan.widths["stem"] < 32


def test_grouped_conv_over_a_concat_keeps_each_part_divisible():
    plan, small = _crop_checks(_concat_then("grouped"))
    assert plan.widths["a"] % 2 == 0 and plan.widths["stem"] % 2 == 0
    assert small.get_layer("grouped").groups == 2
