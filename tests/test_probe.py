"""The probe (sub-layer calls of a custom layer) and the Composite rule built on it."""

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop.graph import probe
from tf_precrop.graph.composite import Composite, Inner, ratio_for
from tf_precrop.graph.registry import REGISTRY


class Bottleneck(keras.layers.Layer):
    """conv1x1(in -> hidden), a nested Sequential 3x3 conv + BN, conv1x1(hidden -> filters); adds its input
    when the widths match (the structure a crop must keep)."""

    def __init__(self, filters, hidden, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.hidden = filters, hidden
        self.reduce = keras.layers.Conv2D(hidden, 1, name="reduce")
        self.mid = keras.Sequential([keras.layers.Conv2D(hidden, 3, padding="same", name="mid"),
                                     keras.layers.BatchNormalization(name="mid_bn")])
        self.expand = keras.layers.Conv2D(filters, 1, use_bias=False, name="expand")

    def call(self, x):
        y = self.expand(keras.ops.relu(self.mid(self.reduce(x))))
        return x + y if x.shape[-1] == self.filters else y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "hidden": self.hidden}


class BottleneckRule(Composite):
    def widths(self, config, in_width):
        return config["filters"], {"hidden": Inner(config["hidden"])}

    def tied_output(self, config):
        return True

    def set_widths(self, config, widths):
        return {**config, "filters": widths["out"], "hidden": widths["hidden"]}


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = Bottleneck(16, 8, name="b1")(x)
    x = Bottleneck(24, 8, name="b2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def test_record_calls_sees_every_leaf_at_its_shape_and_leaves_the_layer_alone():
    block = _model().get_layer("b2")
    nodes = len(block.reduce._inbound_nodes)
    calls = probe.record_calls(block, [(None, 8, 8, 16)])
    assert [type(c.layer).__name__ for c in calls] == ["Conv2D", "Conv2D", "BatchNormalization", "Conv2D"]
    assert [c.out_shapes[0][-1] for c in calls] == [8, 8, 8, 24]
    assert calls[0].in_shapes == [(None, 8, 8, 16)]
    assert len(block.reduce._inbound_nodes) == nodes  # no graph node added to the user's layers
    assert keras.layers.Layer.__call__ is probe._BaseLayer.__call__
    assert not hasattr(probe._state, "recorder") or probe._state.recorder is None


def test_composite_rule_costs_exactly_and_keeps_the_residual():
    model = _model()
    tf_precrop.register_layer(Bottleneck, BottleneckRule())
    try:
        report = tf_precrop.count(model)
        assert report.params == model.count_params()
        b1 = report.layer("b1")
        assert b1.macs == 64 * (16 * 8 + 9 * 8 * 8 + 8 * 16)
        plan = tf_precrop.plan(model, flops=0.5)
        small = tf_precrop.crop(model, plan, seed=0)
        recount = tf_precrop.count(small)
        assert small.count_params() == plan.params
        assert {lc.name: (lc.macs, lc.params) for lc in recount.layers} == {
            lp.name: (lp.macs, lp.params) for lp in plan.layers}
        new_b1, new_b2 = small.get_layer("b1"), small.get_layer("b2")
        # b1 adds its input (16 == 16) and still does; b2 (16 -> 24) does not and still does not.
        assert new_b1.input.shape[-1] == new_b1.filters
        assert new_b2.input.shape[-1] != new_b2.filters
        assert plan.macs_ratio <= 0.5
        assert small(np.zeros((1, 8, 8, 3), "float32")).shape == (1, 3)
    finally:
        REGISTRY.pop(Bottleneck)


def test_ratio_for_survives_float_rounding():
    for base in range(1, 200):
        for target in range(1, base + 1):
            r = ratio_for(target, base, lambda x: max(1, int(x)))
            assert max(1, int(base * r)) == target


def test_composite_that_cannot_be_described_is_refused():
    class Wrong(BottleneckRule):
        def widths(self, config, in_width):
            return config["filters"], {}  # forgets the hidden width

        def set_widths(self, config, widths):
            return {**config, "filters": widths["out"]}

    model = _model()
    tf_precrop.register_layer(Bottleneck, Wrong())
    try:
        with pytest.raises(ValueError, match="not proportional to the block's declared widths"):
            tf_precrop.count(model)
    finally:
        REGISTRY.pop(Bottleneck)


def test_ignored_composite_block_keeps_every_width_and_its_cost():
    model = _model()
    tf_precrop.register_layer(Bottleneck, BottleneckRule())
    try:
        dense = tf_precrop.count(model).layer("b2")
        plan = tf_precrop.plan(model, flops=0.8, ignored_layers=["b2"])
        row = plan.layer("b2")
        assert row.fixed and (row.macs, row.params) == (dense.macs, dense.params)
        assert "b2" not in plan.updates
        small = tf_precrop.crop(model, plan, ignored_layers=["b2"])
        assert small.get_layer("b2").get_config()["hidden"] == 8
        assert small.count_params() == plan.params
    finally:
        REGISTRY.pop(Bottleneck)


_JAX_SCRIPT = r"""
import os, sys
sys.modules["tensorflow"] = None  # the probe must not need TensorFlow
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
import keras, tf_precrop
from test_probe import Bottleneck, BottleneckRule, _model
assert keras.backend.backend() == "jax"
tf_precrop.register_layer(Bottleneck, BottleneckRule())
model = _model()
report = tf_precrop.count(model)
assert report.layer("b1").macs == 64 * (16 * 8 + 9 * 8 * 8 + 8 * 16)
assert report.params == model.count_params()
print("ok")
"""


def test_probe_and_composite_run_on_jax_without_tensorflow():
    pytest.importorskip("jax")
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    out = subprocess.run([sys.executable, "-c", f"ROOT = {root!r}\n" + _JAX_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
