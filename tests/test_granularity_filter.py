"""The granularity benchmark's filter arm: channel masks whose layers read only kept channels."""

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop import sparsity


def chain_model():
    """Conv -> conv -> residual add -> conv -> dense on 8x8x3: channels tied by the add."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(10, name="fc")(x)
    return keras.Model(inp, out, name="chain")


def _kept_inputs(mask):
    return np.flatnonzero(mask.reshape(-1, *mask.shape[-2:]).any(axis=(0, 2)))


def _kept_filters(mask):
    return np.flatnonzero(mask.reshape(-1, mask.shape[-1]).any(axis=0))


def test_inputs_follow_kept_filters_and_live_macs_equal_weight_level():
    model = chain_model()
    plan = tf_precrop.plan(model, flops=0.3)
    masks = sparsity.channel_masks(model, plan, seed=3)

    # A layer's input channels are exactly the previous layer's kept filters (the add ties c1 and c2).
    c1 = _kept_filters(masks["c1/kernel"])
    np.testing.assert_array_equal(_kept_filters(masks["c2/kernel"]), c1)
    np.testing.assert_array_equal(_kept_inputs(masks["c2/kernel"]), c1)
    np.testing.assert_array_equal(_kept_inputs(masks["c3/kernel"]), c1)
    np.testing.assert_array_equal(_kept_inputs(masks["fc/kernel"]),
                                  _kept_filters(masks["c3/kernel"]))
    # Every kept weight is live, so the masked MACs are the live MACs: PreCrop's, as the weight level's.
    live = sparsity.live_macs(model, masks)
    assert live == sparsity.masked_cost(model, masks)["macs"] == plan.macs
    densities = {f"{lp.name}/kernel": lp.density for lp in plan.layers if lp.density is not None}
    weight = sparsity.random_masks(model, densities, granularity="weight", seed=3)
    assert abs(sparsity.masked_cost(model, weight)["macs"] - live) <= 0.01 * live
    assert masks.densities() == pytest.approx({k: densities[k] for k in masks})
    assert sparsity.live_macs(model, weight) <= sparsity.masked_cost(model, weight)["macs"]


def test_independent_filters_leave_dead_inputs():
    """The old filter arm: filters drawn per layer, so kept weights read pruned channels."""
    model = chain_model()
    plan = tf_precrop.plan(model, flops=0.3)
    densities = {f"{lp.name}/kernel": lp.density for lp in plan.layers if lp.density is not None}
    independent = sparsity.random_masks(model, densities, granularity="filter", seed=0)
    assert sparsity.live_macs(model, independent) < sparsity.masked_cost(model, independent)["macs"]


def test_plan_of_another_model_is_refused():
    plan = tf_precrop.plan(chain_model(), flops=0.3)
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)],
                             name="other")
    with pytest.raises(ValueError, match="`plan` was made for another model than 'other'"):
        sparsity.channel_masks(other, plan)
