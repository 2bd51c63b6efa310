"""The rebuilt model: a new object, names kept, fresh init, reproducible, saveable; the original untouched."""

import keras
import numpy as np

import tf_precrop


def _model():
    return tf_precrop.models.resnet20(input_shape=(16, 16, 3), width=8)


def test_original_untouched_and_names_kept():
    model = _model()
    config = model.get_config()
    weights = [w.copy() for w in model.get_weights()]
    small = tf_precrop.crop(model, flops=0.5, seed=1)
    assert small is not model
    assert model.get_config() == config
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]
    assert small.count_params() < model.count_params()


def test_seed_makes_init_reproducible_and_init_is_fresh():
    model = _model()
    plan = tf_precrop.plan(model, flops=0.5)
    a = tf_precrop.crop(model, plan, seed=3)
    b = tf_precrop.crop(model, plan, seed=3)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    # He-normal init sees the new fan-in: the std of a cropped kernel follows sqrt(2 / fan_in).
    kernel = a.get_layer("stage3_block1_conv2").kernel.numpy()
    fan_in = np.prod(kernel.shape[:-1])
    assert abs(kernel.std() / np.sqrt(2.0 / fan_in) - 1) < 0.15


def test_keras_save_load_round_trip(tmp_path):
    small = tf_precrop.crop(_model(), flops=0.5, seed=0)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded(x), small(x), atol=1e-6)


def test_plan_json_round_trip_applies_identically():
    model = _model()
    plan = tf_precrop.plan(model, flops=0.4, round_to=4)
    again = tf_precrop.CropPlan.from_json(plan.to_json())
    assert again == plan
    a = tf_precrop.crop(model, again, seed=0)
    assert a.count_params() == plan.params
    assert "Plan for \"resnet20\"" in plan.summary()
    assert "▼" in plan.summary()


def test_mixed_precision_policy_is_kept():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    small = tf_precrop.crop(model, flops=0.5)
    assert small.get_layer("stem_conv").dtype_policy.name == "mixed_float16"
    assert small.get_layer("stem_conv").compute_dtype == "float16"


def test_normalization_statistics_are_copied():
    inputs = keras.Input((8, 8, 3))
    norm = keras.layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0], name="norm")
    x = keras.layers.Conv2D(16, 3, name="conv")(norm(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    small = tf_precrop.crop(model, flops=0.5)
    np.testing.assert_allclose(small.get_layer("norm").mean.numpy().ravel(), [0.1, 0.2, 0.3], rtol=1e-6)


def test_count_report_matches_keras():
    model = _model()
    report = tf_precrop.count(model)
    assert report.params == model.count_params()
    assert report.flops == 2 * report.macs
    stem = report.layer("stem_conv")
    assert stem.macs == 16 * 16 * 3 * 3 * 3 * 8
    assert stem.kernels["kernel"].weights == 3 * 3 * 3 * 8
    assert "Total" in report.summary()


def _with_lambda():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(x)
    x = keras.layers.Conv2D(16, 3, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))


def test_ignored_python_lambda_is_reused_and_runs():
    # from_config refuses a Python lambda in safe mode; an ignored, weightless layer is reused instead.
    model = _with_lambda()
    config = model.get_config()
    plan = tf_precrop.plan(model, flops=0.5, ignored_layers=["double"])
    small = tf_precrop.crop(model, plan)  # no ignored_layers again: the plan carries them
    assert small.count_params() == plan.params < model.count_params()
    assert small.get_layer("double") is model.get_layer("double")
    assert small(np.ones((1, 8, 8, 3), np.float32)).shape == (1, 2)
    assert model.get_config() == config


def test_preconfig_forwards_ignored_layers():
    model = _with_lambda()
    plan = tf_precrop.preconfig_plan(model, flops=1.0, max_ratio=1.5, ignored_layers=["double"])
    assert plan.ignored_layers == ["double"]
    wide = tf_precrop.preconfig(model, flops=1.0, max_ratio=1.5, ignored_layers=["double"], seed=0)
    assert wide.count_params() == plan.params
    assert wide.get_layer("conv").filters == 16  # pinned by the ignored Lambda after it
