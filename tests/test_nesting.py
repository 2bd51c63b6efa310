"""Models nested in models (issue 12, defect 1): every nesting is cropped to its plan, never left dense."""

import keras
import numpy as np

import tf_precrop

L = keras.layers


def _check(model, flops=0.5, shape=(32, 32, 3)):
    plan = tf_precrop.plan(model, flops=flops)
    small = tf_precrop.crop(model, plan, seed=0)
    assert small.count_params() == plan.params < model.count_params()
    assert tf_precrop.count(small).macs == plan.macs
    assert small(np.ones((2, *shape), np.float32)).shape[0] == 2
    return plan, small


def test_sequential_in_sequential_minimal_case():
    # The case: crop() used to return the dense inner model (19717 params, plan 10021).
    inner = keras.Sequential([keras.Input((32, 32, 3)), L.Conv2D(32, 3, name="c1"), L.Conv2D(64, 3, name="c2")],
                             name="inner")
    outer = keras.Sequential([keras.Input((32, 32, 3)), inner, L.GlobalAveragePooling2D(), L.Dense(5)])
    plan, small = _check(outer)
    assert (outer.count_params(), plan.params) == (19717, 10021)
    assert isinstance(small, keras.Sequential) and isinstance(small.get_layer("inner"), keras.Sequential)
    assert small.get_layer("inner").get_layer("c2").filters == plan.widths["inner/c2"] < 64


def _functional_block(name, width=16, shape=(32, 32, 3)):
    inputs = keras.Input(shape)
    x = L.Conv2D(width, 3, padding="same", name=f"{name}_a")(inputs)
    y = L.Conv2D(width, 3, padding="same", name=f"{name}_b")(L.ReLU()(x))
    return keras.Model(inputs, L.Add()([x, y]), name=name)


def test_functional_in_sequential():
    outer = keras.Sequential([keras.Input((32, 32, 3)), _functional_block("block"), L.GlobalAveragePooling2D(),
                              L.Dense(5)])
    _check(outer)


def test_sequential_in_functional():
    inner = keras.Sequential([keras.Input((32, 32, 3)), L.Conv2D(24, 3, name="c1"), L.ReLU(),
                              L.Conv2D(24, 3, name="c2")], name="inner")
    inputs = keras.Input((32, 32, 3))
    x = L.GlobalAveragePooling2D()(inner(inputs))
    _check(keras.Model(inputs, L.Dense(5)(x)))


def test_three_deep():
    # Sequential > functional > Sequential, each holding its own convs.
    deepest = keras.Sequential([keras.Input((30, 30, 16)), L.Conv2D(16, 3, name="d1"), L.BatchNormalization()],
                               name="deepest")
    mid_in = keras.Input((32, 32, 3))
    mid = keras.Model(mid_in, L.Conv2D(24, 1, name="m2")(deepest(L.Conv2D(16, 3, name="m1")(mid_in))), name="mid")
    outer = keras.Sequential([keras.Input((32, 32, 3)), mid, L.GlobalAveragePooling2D(), L.Dense(5, name="fc")],
                             name="outer")
    plan, small = _check(outer)
    assert small.get_layer("mid").get_layer("deepest").get_layer("d1").filters == plan.widths["mid/deepest/d1"]


def test_shared_nested_model_stays_shared():
    # One nested model called on two branches (siamese): its layers keep one set of widths and weights.
    shared = keras.Sequential([keras.Input((16, 16, 8)), L.Conv2D(16, 3, padding="same", name="s1")], name="shared")
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 1, name="stem")(inputs)
    a, b = shared(x), shared(L.ReLU()(x))
    y = L.GlobalAveragePooling2D()(L.Concatenate()([a, b]))
    model = keras.Model(inputs, L.Dense(4)(y))
    _, small = _check(model, shape=(16, 16, 3))
    assert len([la for la in small.layers if la.name == "shared"]) == 1


def test_shared_nested_model_inside_sequential_and_functional():
    # The same block object appears inside a Sequential and is called again by the outer functional model.
    block = _functional_block("block", shape=(32, 32, 16))
    seq = keras.Sequential([keras.Input((32, 32, 16)), block, L.ReLU()], name="seq")
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 1, name="stem")(inputs)
    x = block(seq(x))
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    _, small = _check(model)
    assert small.get_layer("seq").get_layer("block") is small.get_layer("block")


def test_efficientnet_in_sequential_transfer_learning():
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    model = keras.Sequential([keras.Input((64, 64, 3)), base, L.GlobalAveragePooling2D(), L.Dropout(0.2),
                              L.Dense(10)])
    plan, small = _check(model, shape=(64, 64, 3))
    assert 0.45 < plan.macs_ratio <= 0.5
    assert small.get_layer("efficientnetb0").count_params() < base.count_params()
