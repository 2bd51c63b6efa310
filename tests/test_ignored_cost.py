"""Ignored layers keep their widths, but their cost is part of the model (issue 12, item 2)."""

import re

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop.graph import probe
from tf_precrop.graph.registry import REGISTRY


class ResidualBlock(keras.layers.Layer):
    """A user's residual block: x + BN(Conv(x)), its conv hidden inside ``call``."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return x + self.bn(self.conv(x))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


class MatmulLayer(keras.layers.Layer):
    """Multiplies by its own kernel in a raw op: no sub-layer, so the probe cannot see the MACs."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], input_shape[-1]), name="w")

    def call(self, x):
        return keras.ops.matmul(x, self.w)


class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def _model(block, size=16, width=16):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", name="stem")(inputs)
    x = block(x)
    x = keras.layers.Conv2D(32, 3, padding="same", name="head")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


def test_ignored_block_counts_its_conv_macs_and_params():
    model = _model(ResidualBlock(16, name="res"))
    report = tf_precrop.count(model, ignored_layers=["res"])
    res = report.layer("res")
    assert res.macs == 16 * 16 * 3 * 3 * 16 * 16  # positions x kernel x in x out
    assert res.params == model.get_layer("res").count_params()
    assert report.params == model.count_params()


def test_plan_ratio_includes_the_ignored_block():
    """The issue's case: the block's MACs were left out, so a plan "at 0.500" was really higher."""
    model = _model(ResidualBlock(16, name="res"))
    dense = tf_precrop.count(model, ignored_layers=["res"])
    plan = tf_precrop.plan(model, flops=0.5, ignored_layers=["res"])
    assert plan.dense_macs == dense.macs
    small = tf_precrop.crop(model, plan, ignored_layers=["res"])
    true_macs = tf_precrop.count(small, ignored_layers=["res"]).macs
    assert true_macs == plan.macs
    assert true_macs / dense.macs == pytest.approx(plan.macs_ratio)
    assert plan.macs_ratio <= 0.5
    assert small.count_params() == plan.params
    row = plan.layer("res")
    assert row.fixed and row.width == row.dense_width == 16
    assert row.macs == row.dense_macs > 0
    assert "res (ResidualBlock, fixed)" in plan.summary()


def test_registered_fixed_rule_also_counts_macs():
    model = _model(ResidualBlock(16, name="res"))
    REGISTRY[ResidualBlock] = tf_precrop.graph.registry.Fixed()
    try:
        assert tf_precrop.count(model).layer("res").macs == 16 * 16 * 9 * 16 * 16
    finally:
        REGISTRY.pop(ResidualBlock)


def test_weightless_ignored_layer_costs_nothing():
    model = _model(Doubler(name="double"))
    report = tf_precrop.count(model, ignored_layers=["double"])
    assert report.layer("double").macs == 0 and report.layer("double").params == 0


def test_unknowable_cost_is_refused():
    model = _model(MatmulLayer(name="mm"))
    with pytest.raises(probe.UnknownCostError, match=re.escape(
            "Layer 'mm' (MatmulLayer) keeps its widths, but its MACs cannot be known: it owns the weight(s) "
            "['mm/w'] and uses them outside any Keras sub-layer (e.g. in a raw ops.matmul). Describe its cost "
            "with a tf_precrop.graph.registry.Rule whose terms() return its MACs and register it: "
            "tf_precrop.register_layer(MatmulLayer, rule).")):
        tf_precrop.plan(model, flops=0.5, ignored_layers=["mm"])


def test_cropped_model_with_ignored_block_runs():
    model = _model(ResidualBlock(16, name="res"), size=8)
    small = tf_precrop.crop(model, flops=0.5, ignored_layers=["res"], seed=0)
    x = np.zeros((2, 8, 8, 3), "float32")
    assert small(x).shape == (2, 4)


@pytest.mark.parametrize("make, shape, macs", [
    (lambda: keras.layers.LSTM(4, name="probe"), (5, 3), 5 * (3 * 16 + 4 * 16)),
    (lambda: keras.layers.GRU(4, name="probe"), (5, 3), 5 * (3 * 12 + 4 * 12)),
    (lambda: keras.layers.SimpleRNN(4, name="probe"), (5, 3), 5 * (3 * 4 + 4 * 4)),
    (lambda: keras.layers.EinsumDense("...b,bc->...c", 4, name="probe"), (7, 3), 7 * 3 * 4),
])
def test_ignored_layers_of_known_kinds_count_their_macs(make, shape, macs):
    """Weight layers without a channel rule whose MACs are still known: ignoring them is exact."""
    inputs = keras.Input(shape)
    model = keras.Model(inputs, make()(inputs))
    report = tf_precrop.count(model, ignored_layers=["probe"])
    assert (report.macs, report.params) == (macs, model.count_params())


def test_ignored_attention_counts_its_projections():
    inputs = keras.Input((6, 8))
    model = keras.Model(inputs, keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs))
    report = tf_precrop.count(model, ignored_layers=["mha"])
    # q, k, v: 6 positions x 8 x (2 x 4); output: 6 x (2 x 4) x 8. Score and context products hold no weights.
    assert report.macs == 4 * 6 * 8 * 8
    assert report.params == model.count_params()
