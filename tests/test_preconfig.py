"""PreConfig: widths redistributed at equal MACs, some groups growing; errors for unreachable budgets."""

import re

import keras
import numpy as np
import pytest

import tf_precrop


def _models():
    return {
        "resnet20": tf_precrop.models.resnet20(input_shape=(16, 16, 3), width=8),
        "mobilenetv2": keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, classes=10),
        "efficientnetb0": keras.applications.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=10),
    }


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "efficientnetb0"])
def test_equal_flops_and_zoo_assertions(models, name):
    model = models[name]
    config = model.get_config()
    plan = tf_precrop.preconfig_plan(model, flops=1.0, max_ratio=2.0)
    assert 0.98 <= plan.macs_ratio <= 1.0
    grown = [g for g in plan.groups if g.width > g.dense_width]
    assert grown, "no group grows"  # (ResNet-20 at width 8 too: its early groups double)
    wide = tf_precrop.crop(model, plan, seed=0)
    shape = tuple(model.input_shape[1:])
    assert wide(np.zeros((1,) + shape, "float32")).shape == (1, 10)
    assert wide.count_params() == plan.params
    assert model.get_config() == config
    assert "▲" in plan.summary()


def test_max_ratio_one_equals_dense_widths(models):
    model = models["mobilenetv2"]
    plan = tf_precrop.plan(model, flops=1.0, max_ratio=1.0)
    assert all(lp.width == lp.dense_width for lp in plan.layers)
    assert plan.macs == plan.dense_macs and plan.updates == {}
    same = tf_precrop.preconfig_plan(model, flops=1.0, max_ratio=1.0)
    assert same.widths == plan.widths


def test_paper_point_efficientnetb0_both_budgets(models):
    model = models["efficientnetb0"]
    flops_only = tf_precrop.preconfig_plan(model, flops=1.0)
    assert flops_only.params_ratio > 1.0  # docs/method.md § PreConfig: with FLOPs alone, params rise
    both = tf_precrop.preconfig_plan(model, flops=1.0, params=0.8)
    assert both.macs_ratio >= 0.98 and both.macs_ratio <= 1.0
    assert both.params_ratio <= 0.8
    wide = tf_precrop.preconfig(model, flops=1.0, params=0.8, seed=0)
    assert wide.count_params() == both.params


def test_unreachable_budget(models):
    with pytest.raises(tf_precrop.InfeasibleBudgetError, match=re.escape(
            "flops=3 cannot be reached with max_ratio=1.5: the widest allowed model reaches")):
        tf_precrop.preconfig_plan(models["resnet20"], flops=3.0, max_ratio=1.5)


def test_contradictory_budgets(models):
    with pytest.raises(ValueError, match=re.escape(
            "The budgets contradict: under params=0.1 the largest reachable flops ratio is 0.7962. Received: flops=1, "
            "params=0.1. Raise params or lower flops.")):
        tf_precrop.preconfig_plan(models["mobilenetv2"], flops=1.0, params=0.1)


def test_crop_still_refuses_ratios_above_one(models):
    with pytest.raises(ValueError, match=re.escape(
            "`flops` must be a ratio in (0, 1]. Received: flops=1.2. To redistribute width at equal or higher "
            "cost, use tf_precrop.preconfig().")):
        tf_precrop.crop(models["resnet20"], flops=1.2)


def test_bad_max_ratio(models):
    with pytest.raises(ValueError, match=re.escape("`max_ratio` must be a number >= 1. Received: max_ratio=0.5")):
        tf_precrop.preconfig(models["resnet20"], max_ratio=0.5)
