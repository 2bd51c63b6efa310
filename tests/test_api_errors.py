"""Bad input gets a clear error that names the argument or layer and quotes the value."""

import json
import re

import keras
import pytest

import tf_precrop


def _small():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x), name="small")


def test_subclassed_model():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match=re.escape(
            "Model 'net' is a subclassed model (class Net); its graph cannot be read. tf_precrop needs a "
            "functional or Sequential model.")):
        tf_precrop.plan(Net(name="net"), flops=0.5)


def test_non_keras_object():
    with pytest.raises(TypeError, match=re.escape(
            "Expected a Keras 3 `keras.Model` (functional or Sequential). Received: model of type builtins.str")):
        tf_precrop.crop("resnet50", flops=0.5)


def test_lambda_layer_is_refused_with_its_name():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: t[..., :8], name="slice")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match=re.escape(
            "Layer 'slice' of class Lambda is not supported: tf_precrop cannot tell how it treats channels. "
            "Pass ignored_layers=['slice'] to keep its input and output widths fixed, or give its class a rule: "
            "custom_rules={Lambda: rule} or tf_precrop.register_layer(Lambda, rule).")):
        tf_precrop.count(model)


class _Scale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def _two_unknown_layers():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(x)
    inner_in = keras.Input((6, 6, 16))
    inner = keras.Model(inner_in, _Scale(name="scale")(keras.layers.ReLU()(inner_in)), name="inner")
    x = keras.layers.Conv2D(16, 3, name="conv2")(inner(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))


def test_unknown_layers_are_all_listed_at_once_and_the_advice_works():
    model = _two_unknown_layers()
    with pytest.raises(ValueError, match=re.escape(
            "2 layers are not supported: 'double' of class Lambda, 'inner/scale' of class _Scale. tf_precrop "
            "cannot tell how they treat channels. Pass ignored_layers=['double', 'inner/scale'] to keep their "
            "input and output widths fixed, or give their classes rules: custom_rules={Lambda: rule, "
            "_Scale: rule} or tf_precrop.register_layer(Lambda, rule).")):
        tf_precrop.plan(model, flops=0.5)
    # Following either piece of advice works, and the plan carries it on to crop.
    small = tf_precrop.crop(model, tf_precrop.plan(model, flops=0.5, ignored_layers=["double", "inner/scale"]))
    assert small.get_layer("conv").filters == 16  # its output feeds ignored layers: kept
    assert small.get_layer("conv2").filters < 16
    rules = {keras.layers.Lambda: "passthrough", _Scale: "passthrough"}
    p = tf_precrop.plan(model, flops=0.5, custom_rules=rules)
    assert p.custom_rules == {"Lambda": "PassThrough", "_Scale": "PassThrough"}
    assert tf_precrop.crop(model, p, custom_rules=rules).get_layer("conv").filters < 16
    with pytest.raises(ValueError, match=re.escape(
            "The plan was made with custom_rules for ['Lambda', '_Scale']; rules are code and are not stored "
            "in the plan. Pass the same custom_rules to crop. Received: custom_rules for []")):
        tf_precrop.crop(model, p)


def test_custom_rules_are_checked():
    with pytest.raises(ValueError, match=re.escape("Unknown rule 'passthru'.")):
        tf_precrop.count(_small(), custom_rules={_Scale: "passthru"})
    with pytest.raises(TypeError, match=re.escape(
            "`custom_rules` must be a dict {layer class: rule name or tf_precrop.Rule}. Received: "
            "custom_rules=['passthrough']")):
        tf_precrop.count(_small(), custom_rules=["passthrough"])


def test_custom_layer_refused_then_registered():
    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = Scale(name="scale")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="Layer 'scale' of class Scale is not supported"):
        tf_precrop.plan(model, flops=0.5)
    tf_precrop.register_layer(Scale, "passthrough")
    try:
        assert tf_precrop.plan(model, flops=0.5).widths["conv"] < 16
    finally:
        from tf_precrop.graph.registry import REGISTRY

        REGISTRY.pop(Scale)


@pytest.mark.parametrize("value", [0, -0.1, 1.5])
def test_flops_out_of_range(value):
    with pytest.raises(ValueError, match=re.escape(
            f"`flops` must be a ratio in (0, 1]. Received: flops={value:g}. To redistribute width at equal or "
            "higher cost, use tf_precrop.preconfig().")):
        tf_precrop.crop(_small(), flops=value)


def test_params_not_a_number():
    with pytest.raises(TypeError, match=re.escape("`params` must be a number. Received: params='half'")):
        tf_precrop.plan(_small(), params="half")


def test_no_budget():
    with pytest.raises(ValueError, match=re.escape(
            "At least one budget is required. Received: flops=None, params=None")):
        tf_precrop.plan(_small())


def test_infeasible_budget_names_the_minimum():
    with pytest.raises(tf_precrop.InfeasibleBudgetError, match=re.escape(
            "Infeasible budget: with every group at its minimum width the model keeps 0.0625 of its dense "
            "MACs. Received: flops=0.01.")):
        tf_precrop.plan(_small(), flops=0.01)


def test_unknown_input_dims():
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(16, 3)(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match=re.escape(
            "Input 'image' has unknown dimensions: shape=(None, None, None, 3). MACs depend on the spatial "
            "size: build the model with a fixed input shape, e.g. input_shape=(224, 224, 3).")):
        tf_precrop.count(model)


def test_channels_first_is_refused():
    inputs = keras.Input((3, 8, 8))
    x = keras.layers.Conv2D(16, 3, data_format="channels_first", name="cf")(inputs)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match=re.escape(
            "Layer 'cf' (Conv2D) uses data_format='channels_first'. tf_precrop supports channels_last models")):
        tf_precrop.count(model)


def test_bad_round_to_and_ignored_layers():
    with pytest.raises(ValueError, match=re.escape("`round_to` must be a positive integer. Received: round_to=0")):
        tf_precrop.plan(_small(), flops=0.5, round_to=0)
    with pytest.raises(TypeError, match=re.escape(
            "`ignored_layers` must be a list of layer names, not a string. Received: ignored_layers='conv'")):
        tf_precrop.plan(_small(), flops=0.5, ignored_layers="conv")
    with pytest.raises(ValueError, match=re.escape(
            "`ignored_layers` names layers that are not in the model. Received: ['nope']")):
        tf_precrop.plan(_small(), flops=0.5, ignored_layers=["nope"])


def test_plan_and_budget_together():
    model = _small()
    plan = tf_precrop.plan(model, flops=0.5)
    with pytest.raises(ValueError, match=re.escape(
            "Pass either a plan or budgets, not both. Received: plan and flops=0.5, params=None")):
        tf_precrop.crop(model, plan, flops=0.5)


def test_plan_for_another_model():
    plan = tf_precrop.plan(_small(), flops=0.5)
    other = tf_precrop.models.resnet20(input_shape=(8, 8, 3), width=4)
    with pytest.raises(ValueError, match=re.escape("The plan was made for another model (plan: 'small'")):
        tf_precrop.crop(other, plan)


def test_crop_with_plan_refuses_other_ignored_layers():
    model = _two_unknown_layers()
    plan = tf_precrop.plan(model, flops=0.5, ignored_layers=["double", "inner/scale"])
    assert plan.ignored_layers == ["double", "inner/scale"]
    with pytest.raises(ValueError, match=re.escape(
            "The plan was made with ignored_layers=['double', 'inner/scale']; crop applies the plan's. "
            "Received: ignored_layers=['double']. Leave ignored_layers out, or make a new plan.")):
        tf_precrop.crop(model, plan, ignored_layers=["double"])
    # Passing the same ones again is harmless.
    assert tf_precrop.crop(model, plan, ignored_layers=["inner/scale", "double"]).count_params() == plan.params


def test_from_json_raises_value_error_on_malformed_plans():
    good = json.loads(tf_precrop.plan(_small(), flops=0.5).to_json())
    for text, message in [
        ("[1, 2", "Not a JSON plan"),
        ("[]", "Unsupported plan format_version. Expected one of [1, 2], received: None"),
        (json.dumps({**good, "format_version": 9}), "Unsupported plan format_version."),
        (json.dumps({k: v for k, v in good.items() if k != "layers"}),
         "Malformed plan (format_version 2): KeyError('layers')"),
        (json.dumps({**good, "layers": [{"name": "x"}]}), "Malformed plan (format_version 2): TypeError"),
        (json.dumps({**good, "extra": 1}), "Malformed plan (format_version 2): TypeError"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            tf_precrop.CropPlan.from_json(text)


def test_version_1_plans_still_apply():
    model = _small()
    plan = tf_precrop.plan(model, flops=0.5)
    data = json.loads(plan.to_json())
    for key in ("ignored_layers", "custom_rules", "fingerprint"):
        data.pop(key)
    data["format_version"] = 1
    old = tf_precrop.CropPlan.from_json(json.dumps(data))
    assert old.fingerprint is None and old.ignored_layers == []
    assert tf_precrop.crop(model, old).count_params() == plan.params
