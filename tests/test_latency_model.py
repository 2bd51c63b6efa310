"""The latency model: exact features, its posynomial in the solver, the latency budget, fitting, errors."""

import json
import re

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop import LatencyModel
from tf_precrop import latency_fit
from tf_precrop import latency_model as lm_lib

RATES = LatencyModel(ns_per_mac=0.01, ns_per_depthwise_mac=0.03, ns_per_element=0.2, ns_per_op=500.0, name="test")


def _tiny():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(8, 1, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(x), name="tiny")


def _mobilenet():
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)


def test_features_of_a_tiny_model_exactly():
    # c1: 8*8*27*16 MACs, reads 8*8*3, writes 8*8*16; dw: 8*8*9*16, 1024 -> 1024; c2: 8*8*16*8, 1024 -> 512;
    # fc: 8*4, 8 -> 4. BN, ReLU and pooling fold into neighbours on export: no ops of their own.
    assert lm_lib.features(_tiny()) == {
        "macs": 27648 + 8192 + 32,
        "depthwise_macs": 9216,
        "elements": (192 + 1024) + (1024 + 1024) + (1024 + 512) + (8 + 4),
        "ops": 4,
    }


def test_mac_features_split_the_one_counter():
    model = _mobilenet()
    feats = lm_lib.features(model)
    assert feats["macs"] + feats["depthwise_macs"] == tf_precrop.count(model).macs
    assert feats["depthwise_macs"] > 0


def test_predicted_latency_of_a_plan_is_the_rebuilt_models():
    model = _mobilenet()
    plan = tf_precrop.plan(model, latency=0.5, latency_model=RATES)
    small = tf_precrop.crop(model, plan)
    assert RATES.predict_ms(small) == pytest.approx(plan.latency_ms, rel=1e-9)
    assert RATES.predict_ms(model) == pytest.approx(plan.dense_latency_ms, rel=1e-9)
    assert 0.49 <= plan.latency_ratio <= 0.5 + 1e-9
    assert plan.budgets == {"flops": None, "params": None, "latency": 0.5}


def test_latency_budget_spends_on_macs_not_traffic():
    """Traffic-heavy rates: the FLOPs plan misses the latency it suggests, the latency plan keeps it."""
    model = _mobilenet()
    rates = LatencyModel(0.001, 0.001, 1.0, 0.0)
    by_flops = tf_precrop.plan(model, flops=0.5, latency_model=rates)
    by_latency = tf_precrop.plan(model, latency=by_flops.macs_ratio, latency_model=rates)
    assert by_flops.latency_ratio > by_flops.macs_ratio + 0.05
    assert by_latency.latency_ratio <= by_flops.macs_ratio + 1e-9


def test_flops_and_latency_budgets_both_hold():
    model = _mobilenet()
    plan = tf_precrop.plan(model, flops=0.4, latency=0.6, latency_model=RATES, round_to=8)
    assert plan.macs_ratio <= 0.4 + 1e-9 and plan.latency_ratio <= 0.6 + 1e-9


def test_latency_model_alone_only_reports():
    model = _tiny()
    plain = tf_precrop.plan(model, flops=0.5)
    reported = tf_precrop.plan(model, flops=0.5, latency_model=RATES)
    assert reported.widths == plain.widths and plain.latency_ratio is None
    line = (f"Latency (predicted by test): {reported.dense_latency_ms:.3f} ms -> {reported.latency_ms:.3f} ms "
            f"(ratio {reported.latency_ratio:.4f})")
    assert line in reported.summary().splitlines()


def test_plan_json_keeps_latency_fields_and_reads_old_plans():
    plan = tf_precrop.plan(_tiny(), latency=0.7, latency_model=RATES)
    again = tf_precrop.CropPlan.from_json(plan.to_json())
    assert again == plan
    old = json.loads(plan.to_json())
    for key in ("latency_model", "dense_latency_ms", "latency_ms"):
        del old[key]
    assert tf_precrop.CropPlan.from_json(json.dumps(old)).latency_ratio is None


def test_errors():
    model = _tiny()
    with pytest.raises(ValueError, match=re.escape(
            "A latency budget needs the latency model of the target device. Pass latency_model= (e.g. "
            "tf_precrop.export.calibrate_latency(model) on that device, or tf_precrop.LatencyModel.from_json). "
            "Received: latency=0.5, latency_model=None")):
        tf_precrop.crop(model, latency=0.5)
    with pytest.raises(ValueError, match=re.escape("`latency` must be a ratio in (0, 1]. Received: latency=1.5")):
        tf_precrop.plan(model, latency=1.5, latency_model=RATES)
    with pytest.raises(TypeError, match=re.escape(
            "`latency_model` must be a tf_precrop.LatencyModel. Received: latency_model of type dict")):
        tf_precrop.plan(model, latency=0.5, latency_model={"ns_per_mac": 1})
    with pytest.raises(tf_precrop.InfeasibleBudgetError, match=re.escape(
            "of its dense predicted latency. Received: latency=0.01.")):
        tf_precrop.plan(model, latency=0.01, latency_model=RATES)
    plan = tf_precrop.plan(model, flops=0.5)
    with pytest.raises(ValueError, match=re.escape(
            "Pass either a plan or budgets, not both. Received: plan and flops=None, params=None, latency=0.5")):
        tf_precrop.crop(model, plan, latency=0.5)
    with pytest.raises(ValueError, match=re.escape(
            "Latency rates must be finite and >= 0. Received: macs rate -1")):
        LatencyModel(-1, 0, 0, 0)
    with pytest.raises(ValueError, match="A latency model needs a positive rate for MACs or elements"):
        LatencyModel(0, 0, 0, 5.0)
    with pytest.raises(ValueError, match="Not a tf_precrop latency model"):
        LatencyModel.from_json('{"ns_per_mac": 1}')


def test_json_round_trip():
    assert LatencyModel.from_json(RATES.to_json()) == RATES


def test_fit_recovers_the_rates_of_a_linear_device():
    model = _tiny()
    rows = [lm_lib.features(model)] + [lm_lib.features(tf_precrop.crop(model, p))
                                       for p in latency_fit.random_plans(model, 7, round_to=1, seed=3)]
    measured = [RATES.predict_ms(f) for f in rows]
    fitted = LatencyModel.fit(rows, measured, name="fit")
    np.testing.assert_allclose(fitted.rates, RATES.rates, rtol=1e-6)
    assert fitted.name == "fit"
    with pytest.raises(ValueError, match=re.escape(
            "Fitting needs at least 4 measured models, one latency each. Received: 3 feature rows and 3 latencies")):
        LatencyModel.fit(rows[:3], measured[:3])
    with pytest.raises(ValueError, match=re.escape("Latencies must be > 0. Received: latencies_ms=[1.0, 0.0")):
        LatencyModel.fit(rows[:4], [1.0, 0.0, 1.0, 1.0])


def test_random_plans_are_aligned_seeded_and_applicable():
    model = _mobilenet()
    plans = latency_fit.random_plans(model, 3, round_to=8, seed=1)
    again = latency_fit.random_plans(model, 3, round_to=8, seed=1)
    assert [p.widths for p in plans] == [p.widths for p in again]
    assert plans[0].widths != plans[1].widths
    for p in plans:
        assert all(g.width % 8 == 0 or g.width == g.dense_width for g in p.groups)
        assert p.macs_ratio < 1.0
    small = tf_precrop.crop(model, plans[0])
    assert small.count_params() == plans[0].params
    with pytest.raises(ValueError, match=re.escape("`samples` must be a positive integer. Received: samples=0")):
        latency_fit.random_plans(model, 0)


def test_calibrate_latency_measures_and_fits(tmp_path):
    """Real timings of a tiny model (they may barely vary with width: the fit must still give a usable model)."""
    cal = tf_precrop.export.calibrate_latency(_tiny(), samples=4, round_to=1, num_runs=10, rounds=2,
                                              warmup_runs=1, work_dir=str(tmp_path))
    assert [r["name"] for r in cal.rows] == ["dense", "random_0", "random_1", "random_2", "random_3"]
    assert cal.rows[0]["macs_ratio"] == 1.0
    assert all(r["p50_ms"] > 0 and r["predicted_ms"] > 0 for r in cal.rows)
    assert cal.latency_model.name == "tiny LiteRT 1 thread"
    assert any(cal.latency_model.rates[:3])  # a rate that depends on width
    assert cal.max_relative_error == max(abs(r["relative_error"]) for r in cal.rows)
    assert len(list(tmp_path.glob("*.tflite"))) == 5
