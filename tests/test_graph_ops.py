"""keras.ops nodes in a functional graph (issue 12 item 3): one test per op family, refusals, ignored ops
and register_layer with an op class."""

import keras
import numpy as np
import pytest
from keras import layers, ops

import tf_precrop
from tf_precrop.graph import op_rules


def _model(body, input_shape=(8, 8, 3), width=16, head=True):
    """conv(width) -> body(x) -> conv -> pooled dense, so the body's input and output widths are free."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, padding="same", name="c1")(inputs)
    x = body(x)
    if head:
        x = layers.Conv2D(8, 1, name="c2")(x)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        x = layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, x)


def _op_name(model, cls_name, index=0):
    """Keras numbers op names per process (pad, pad_1...): look them up in the model."""
    names = [op.name for op in model.operations if type(op).__name__ == cls_name]
    return names[index]


def _crop_checks(model, flops=0.6, **kwargs):
    plan = tf_precrop.plan(model, flops=flops, **kwargs)
    before = {id(op): len(op._inbound_nodes) for op in model.operations}
    small = tf_precrop.crop(model, plan, seed=0, ignored_layers=kwargs.get("ignored_layers", ()))
    # The user's op objects are not reused: the original graph gains no nodes.
    assert {id(op): len(op._inbound_nodes) for op in model.operations} == before
    x = np.random.default_rng(0).random((2,) + tuple(model.input_shape[1:]), dtype=np.float32)
    assert small(x).shape == model(x).shape
    assert small.count_params() == plan.params
    assert tf_precrop.count(small, ignored_layers=kwargs.get("ignored_layers", ())).macs == plan.macs
    assert plan.macs_ratio <= flops
    return plan, small


def _layer_widths(model):
    return {layer.name: layer.output.shape[-1] for layer in model.layers if hasattr(layer, "filters")}


def test_elementwise_ops_and_activations_tie_like_add():
    def body(x):
        y = layers.Conv2D(16, 1, name="branch")(x)
        x = ops.relu(x) + ops.relu6(y)
        x = ops.sigmoid(x) * ops.silu(x) - ops.hard_sigmoid(x)
        x = ops.maximum(ops.hard_silu(x), ops.gelu(x)) / 2.0
        x = ops.minimum(ops.tanh(x), ops.softmax(x, axis=-1))
        x = ops.where(x > 0, ops.exp(-ops.abs(x)), ops.sqrt(ops.abs(x)))
        return ops.cast(ops.clip(x * 0.5, 0.0, 6.0), "float32")

    plan, small = _crop_checks(_model(body))
    assert plan.widths["c1"] == plan.widths["branch"] < 16
    assert plan.layer(_op_name(small, "Clip")).width == plan.widths["c1"]


def test_constant_operand_as_wide_as_channels_keeps_them():
    plan, _ = _crop_checks(_model(lambda x: x * np.linspace(0, 1, 16, dtype="float32")), flops=0.9)
    assert plan.widths["c1"] == 16
    fixed = {g.origin: g.fixed for g in plan.groups}
    assert "combines it with a constant of shape (16,)" in fixed["c1"]


def test_pad_spatial_passes_channels_and_channel_padding_adds_fixed_channels():
    plan, small = _crop_checks(_model(lambda x: ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))))
    assert plan.widths["c1"] < 16
    assert small.get_layer("c2").input.shape[1:] == (10, 10, plan.widths["c1"])

    plan, small = _crop_checks(_model(lambda x: ops.pad(x, ((0, 0), (0, 0), (0, 0), (2, 1)))))
    assert plan.widths["c1"] < 16
    assert small.get_layer("c2").input.shape[-1] == plan.widths["c1"] + 3


def test_equal_split_keeps_halves_equal_like_cspnet():
    def body(x):
        a, b = ops.split(x, 2, axis=-1)
        b = layers.Conv2D(8, 3, padding="same", name="half")(b)
        return ops.concatenate([a, b], axis=-1)

    plan, small = _crop_checks(_model(body, width=32))
    halves = [t.shape[-1] for t in small.get_layer("half").input._keras_history.operation.output]
    assert halves[0] == halves[1] == plan.widths["c1"] // 2 < 16
    assert small.get_layer("c2").input.shape[-1] == halves[0] + plan.widths["half"]


def test_split_at_indices_scales_its_parts_and_rewrites_the_indices():
    def body(x):
        a, b, c = ops.split(x, [4, 12], axis=-1)  # 4 : 8 : 4 of 16
        return ops.concatenate([layers.Conv2D(8, 1, name="pa")(a), b, layers.Conv2D(8, 1, name="pc")(c)], axis=-1)

    plan, small = _crop_checks(_model(body), flops=0.5)
    width = plan.widths["c1"]
    assert width < 16 and width % 4 == 0
    split = next(op for op in small.operations if type(op).__name__ == "Split")
    assert split.indices_or_sections == (width // 4, 3 * width // 4)
    assert [t.shape[-1] for t in split.output] == [width // 4, width // 2, width // 4]


def test_split_along_a_spatial_axis_passes_channels():
    def body(x):
        top, bottom = ops.split(x, 2, axis=1)
        return ops.concatenate([top, bottom], axis=1)

    plan, _ = _crop_checks(_model(body))
    assert plan.widths["c1"] < 16


def test_concatenate_op_is_a_composite_like_the_layer():
    def body(x):
        y = layers.Conv2D(24, 1, name="other")(x)
        return ops.concatenate([x, y], axis=-1)

    plan, small = _crop_checks(_model(body))
    assert small.get_layer("c2").input.shape[-1] == plan.widths["c1"] + plan.widths["other"]
    roots = {lp.name: lp.group for lp in plan.layers}
    assert roots["c1"] != roots["other"]


@pytest.mark.parametrize("reduce", [
    lambda x: ops.mean(x, axis=(1, 2), keepdims=True),
    lambda x: ops.expand_dims(ops.expand_dims(ops.max(x, axis=[1, 2]), 1), 1),
    lambda x: ops.reshape(ops.sum(x, axis=(1, 2)), (-1, 1, 1, 16)),
])
def test_spatial_reductions_pass_channels(reduce):
    plan, small = _crop_checks(_model(reduce))
    assert plan.widths["c1"] < 16
    assert small.get_layer("c2").input.shape[1:] == (1, 1, plan.widths["c1"])


def test_reduction_over_channels_gives_a_fixed_width_of_one():
    def body(x):
        attention = ops.sigmoid(ops.mean(x, axis=-1, keepdims=True))  # (B, H, W, 1), CBAM-style
        return x * attention

    plan, small = _crop_checks(_model(body))
    assert plan.widths["c1"] < 16
    mean = _op_name(small, "Mean")
    assert plan.layer(mean).width == 1


def test_reshape_keeping_or_flattening_channels_is_rewritten():
    def body(x):
        s = ops.reshape(ops.mean(x, axis=(1, 2)), (-1, 1, 1, 16))  # squeeze-excite target shape
        s = layers.Conv2D(16, 1, name="se")(s)
        return x * ops.sigmoid(s)

    plan, small = _crop_checks(_model(body))
    width = plan.widths["c1"]
    assert width < 16
    reshape = next(op for op in small.operations if type(op).__name__ == "Reshape")
    assert reshape.newshape == (-1, 1, 1, width)

    def flat(x):
        return layers.Dense(4, name="fd")(ops.reshape(x, (-1, 8 * 8 * 16)))

    plan, small = _crop_checks(_model(flat, head=False))
    reshape = next(op for op in small.operations if type(op).__name__ == "Reshape")
    assert reshape.newshape == (-1, 64 * plan.widths["c1"]) and plan.widths["c1"] < 16


def test_reshape_and_transpose_that_move_channels_keep_widths_with_a_reason():
    def body(x):
        x = ops.reshape(x, (-1, 8, 16, 8))  # splits the channel axis: channels of 16 become 2 x 8
        return ops.transpose(x, (0, 2, 1, 3))  # swaps H and W: channels stay last

    plan, _ = _crop_checks(_model(body), flops=0.9)
    fixed = {g.origin: g.fixed for g in plan.groups}
    assert plan.widths["c1"] == 16
    assert "reshapes the channel axis: (None, 8, 8, 16) -> (None, 8, 16, 8)" in fixed["c1"]

    plan, _ = _crop_checks(_model(lambda x: ops.transpose(ops.transpose(x, (0, 3, 1, 2)), (0, 2, 3, 1))), flops=0.9)
    assert "moves the channel axis (axes [0, 3, 1, 2])" in {g.origin: g.fixed for g in plan.groups}["c1"]


def test_expand_dims_and_squeeze_around_the_channels():
    def body(x):
        x = ops.expand_dims(x, 1)  # (B, 1, 8, 8, C): channels stay last
        return ops.squeeze(x, axis=1)

    plan, _ = _crop_checks(_model(body))
    assert plan.widths["c1"] < 16

    plan, _ = _crop_checks(_model(lambda x: ops.squeeze(ops.expand_dims(x, -1), -1)), flops=0.9)
    assert "adds an axis after the channel axis" in {g.origin: g.fixed for g in plan.groups}["c1"]


def test_slicing_spatially_or_all_channels_passes_a_channel_range_is_fixed():
    plan, small = _crop_checks(_model(lambda x: x[:, 1:, 1:, 0:16]))
    assert plan.widths["c1"] < 16
    assert small.get_layer("c2").input.shape[1:] == (7, 7, plan.widths["c1"])

    plan, small = _crop_checks(_model(lambda x: ops.slice(x, (0, 0, 0, 0), (-1, 4, 4, 16))))
    assert plan.widths["c1"] < 16
    assert small.get_layer("c2").input.shape[1:] == (4, 4, plan.widths["c1"])

    plan, _ = _crop_checks(_model(lambda x: x[..., 2:10]), flops=0.9)
    assert plan.widths["c1"] == 16
    assert "selects channels [2:10] of 16" in {g.origin: g.fixed for g in plan.groups}["c1"]


def test_pooling_and_resize_ops_pass_channels():
    def body(x):
        x = ops.max_pool(x, 2, strides=2)
        x = ops.average_pool(x, 2, strides=1, padding="same")
        return ops.image.resize(x, (8, 8), interpolation="nearest")

    plan, small = _crop_checks(_model(body))
    assert plan.widths["c1"] < 16
    assert small.get_layer("c2").input.shape[1:] == (8, 8, plan.widths["c1"])


def test_raw_conv_op_is_refused_with_a_reason():
    kernel = np.ones((3, 3, 16, 16), "float32")
    model = _model(lambda x: ops.conv(x, kernel, padding="same"))
    name = _op_name(model, "Conv")
    with pytest.raises(ValueError) as err:
        tf_precrop.plan(model, flops=0.5)
    assert str(err.value) == (
        f"Operation '{name}' (keras.ops Conv) is not supported: its kernel is a call argument, not a layer "
        "weight, so tf_precrop can neither count its cost nor resize it. Use a layer that owns its kernel "
        "(keras.layers.Conv2D)."
    )


def test_unknown_op_message_says_it_is_an_op_and_its_advice_works():
    model = _model(lambda x: ops.glu(ops.concatenate([x, x], axis=-1)))
    name = _op_name(model, "Glu")
    with pytest.raises(ValueError) as err:
        tf_precrop.plan(model, flops=0.5)
    assert str(err.value) == (
        f"Operation '{name}' (keras.ops Glu) is not supported: tf_precrop cannot tell how it treats channels. "
        f"Pass ignored_layers=['{name}'] to keep its input and output widths fixed, or register a rule for its "
        "class with tf_precrop.register_layer(keras.src.ops.nn.Glu, ...)."
    )
    plan, _ = _crop_checks(model, flops=0.9, ignored_layers=[name])
    assert plan.layer(name).params == 0 and plan.widths["c1"] == 16


def test_ignoring_a_supported_op_keeps_its_widths():
    # The case: following the advice ignored_layers=['pad'] crashed in count_params().
    model = _model(lambda x: ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))))
    name = _op_name(model, "Pad")
    plan, _ = _crop_checks(model, flops=0.9, ignored_layers=[name])
    assert plan.widths["c1"] == 16
    assert plan.layer(name).dense_params == 0


def test_register_layer_accepts_an_op_class():
    class Swish2(keras.Operation):
        def call(self, x):
            return x * ops.sigmoid(2.0 * x)

        def compute_output_spec(self, x):
            return keras.KerasTensor(x.shape, x.dtype)

    model = _model(lambda x: Swish2()(x))
    with pytest.raises(ValueError, match=r"Operation '.*' \(keras.Operation Swish2\) is not supported"):
        tf_precrop.plan(model, flops=0.5)
    with pytest.raises(ValueError) as err:
        tf_precrop.register_layer(Swish2, "conv")
    assert str(err.value) == (
        "Swish2 is a keras.Operation (no weights of its own): allowed rules are ['fixed', 'merge', "
        "'passthrough'] or a Rule instance. Received: rule='conv'"
    )
    tf_precrop.register_layer(Swish2, "passthrough")
    try:
        plan, _ = _crop_checks(model)
        assert plan.widths["c1"] < 16
    finally:
        del tf_precrop.graph.registry.REGISTRY[Swish2]
    with pytest.raises(TypeError, match="must be a keras.layers.Layer or keras.Operation subclass"):
        tf_precrop.register_layer(np.ndarray, "passthrough")


def test_describe_names_layers_and_ops():
    assert op_rules.describe(layers.ReLU(name="r")) == "Layer 'r' of class ReLU"
    model = _model(lambda x: ops.pad(x, 1), head=False)
    pad = next(op for op in model.operations if type(op).__name__ == "Pad")
    assert op_rules.describe(pad, "outer/pad") == "Operation 'outer/pad' (keras.ops Pad)"
