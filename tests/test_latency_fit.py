"""Fitting a latency model to synthetic timings: exact recovery, intercept-only timings, degenerate inputs."""

import re
import warnings

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop import LatencyModel
from tf_precrop import latency_fit
from tf_precrop import latency_model as lm_lib

RATES = LatencyModel(ns_per_mac=0.01, ns_per_depthwise_mac=0.03, ns_per_element=0.2, ns_per_op=500.0)


def _tiny():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(8, 1, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(x), name="tiny")


@pytest.fixture(scope="module")
def rows():
    model = _tiny()
    plans = latency_fit.random_plans(model, 7, round_to=1, seed=3)
    return [lm_lib.features(model)] + [lm_lib.features(tf_precrop.crop(model, p)) for p in plans]


def test_ops_feature_is_constant_over_a_calibration_set(rows):
    # The reason intercept-only fits happen: narrowing never changes the number of kernel ops.
    assert len({row["ops"] for row in rows}) == 1
    assert len({row["macs"] for row in rows}) > 1


def test_linear_timings_give_back_their_rates(rows):
    measured = [RATES.predict_ms(row) for row in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rates = latency_fit.fit_rates(rows, measured)
    np.testing.assert_allclose(rates, RATES.rates, rtol=1e-6)


@pytest.mark.parametrize("noise", [0.0, 1e-4])
def test_timings_that_do_not_vary_with_width_still_give_a_width_dependent_model(rows, noise):
    # The flaky case of calibrate_latency: a near-constant latency is best explained by ns_per_op alone, a
    # model LatencyModel rejects. The fit drops the constant feature instead and warns.
    rng = np.random.default_rng(0)
    measured = list(0.05 * (1 + noise * rng.standard_normal(len(rows))))
    with pytest.warns(RuntimeWarning, match=re.escape("Fitted without the features constant over the "
                                                      "measurements (ops)")):
        fitted = LatencyModel.fit(rows, measured, name="flat")
    assert fitted.ns_per_op == 0.0
    assert any(fitted.rates[:3])
    assert 0 < fitted.predict_ms(rows[-1]) < fitted.predict_ms(rows[0])


def test_noisy_flat_timings_always_give_a_valid_model(rows):
    # Timing noise around a flat latency: whatever NNLS makes of it, the result is a usable model.
    for seed in range(30):
        rng = np.random.default_rng(seed)
        measured = list(0.05 * (1 + 0.02 * rng.standard_normal(len(rows))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fitted = LatencyModel.fit(rows, measured)
        assert any(fitted.rates[:3]) and fitted.predict_ms(rows[-1]) > 0


def test_duplicate_and_collinear_rows_fit(rows):
    doubled = rows[:3] * 2
    measured = [RATES.predict_ms(row) for row in doubled]
    fitted = LatencyModel.fit(doubled, measured)
    np.testing.assert_allclose([fitted.predict_ms(r) for r in doubled], measured, rtol=1e-6)


def test_calibration_reports_each_row(rows):
    named = [{"name": f"v{i}", **row} for i, row in enumerate(rows)]
    cal = latency_fit.calibration(named, [RATES.predict_ms(row) for row in rows], name="synthetic")
    assert cal.latency_model.name == "synthetic"
    assert [r["name"] for r in cal.rows] == [f"v{i}" for i in range(len(rows))]
    assert cal.max_relative_error < 1e-6


def test_errors(rows):
    zero = [{"macs": 0, "depthwise_macs": 0, "elements": 0, "ops": 3}] * 4
    with pytest.raises(latency_fit.LatencyFitError, match=re.escape(
            "Cannot fit a latency model: the features macs, depthwise_macs, elements are 0 in every measured "
            "model")):
        latency_fit.fit_rates(zero, [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=re.escape(
            "Fitting needs at least 4 measured models, one latency each. Received: 3 feature rows and 3 latencies")):
        latency_fit.fit_rates(rows[:3], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=re.escape("Latencies must be > 0. Received: latencies_ms=[1.0, 0.0")):
        latency_fit.fit_rates(rows[:4], [1.0, 0.0, 1.0, 1.0])
    bad = [dict(rows[0], macs=float("nan"))] + rows[1:4]
    with pytest.raises(ValueError, match="Latency features must be finite and >= 0"):
        latency_fit.fit_rates(bad, [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=re.escape("`round_to` must be a positive integer. Received: round_to=0")):
        latency_fit.random_plans(_tiny(), 2, round_to=0)
