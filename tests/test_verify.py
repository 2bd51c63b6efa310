"""The guarantee: crop() checks the rebuilt model against its plan and refuses to return a model that differs."""

import dataclasses
import re

import keras
import pytest

import tf_precrop
from tf_precrop import verify
from tf_precrop.graph import registry


def _small():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = keras.layers.Conv2D(16, 3, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x), name="small")


def test_a_rule_that_rewrites_wrongly_is_caught(monkeypatch):
    model = _small()
    plan = tf_precrop.plan(model, flops=0.5)
    assert plan.widths["conv"] == 8
    original = registry.Conv.rewrite

    def off_by_one(self, config, widths):
        config = original(self, config, widths)
        config[self.width_key] += 1
        return config

    monkeypatch.setattr(registry.Conv, "rewrite", off_by_one)
    with pytest.raises(tf_precrop.PlanMismatchError, match=re.escape(
            "The rebuilt model differs from its plan at layer 'conv' (Conv2D): planned 7,776 MACs and 224 "
            "params, rebuilt 8,748 MACs and 252 params. This is a tf_precrop bug; please report it with the "
            "model.")):
        tf_precrop.crop(model, flops=0.5)


def test_totals_are_checked_too():
    model = _small()
    plan = tf_precrop.plan(model, flops=0.5)
    small = tf_precrop.crop(model, plan)
    verify.check_model_matches_plan(small, plan)  # silent when right
    wrong = dataclasses.replace(plan, params=plan.params + 1)
    with pytest.raises(tf_precrop.PlanMismatchError, match=re.escape(
            f"The rebuilt model differs from its plan: count_params() is {plan.params:,}, planned "
            f"{plan.params + 1:,}. This is a tf_precrop bug; please report it with the model.")):
        verify.check_model_matches_plan(small, wrong)


def test_preconfig_is_checked(monkeypatch):
    calls = []
    original = verify.check_model_matches_plan
    monkeypatch.setattr(verify, "check_model_matches_plan", lambda *a, **k: calls.append(1) or original(*a, **k))
    tf_precrop.preconfig(_small(), flops=1.0, max_ratio=1.5)
    assert calls == [1]
