"""Layer-wise density solver (docs/method.md § Layer-wise densities) against its closed forms, and budgets."""

import keras
import numpy as np
import pytest

from tf_precrop import sparsity
from tf_precrop.sparsity import densities

N = np.array([432.0, 2304.0, 4608.0, 9216.0, 18432.0, 36864.0, 640.0])
F = np.array([442368.0, 2359296.0, 1179648.0, 2359296.0, 1179648.0, 2359296.0, 640.0])


def test_water_filling_params_only_equal_kept_weights_with_cap():
    budget = 0.1 * N.sum()
    p = sparsity.solve_densities(N, F, max_weights=budget)
    closed = sparsity.water_filling(N, budget)
    np.testing.assert_allclose(p, closed, rtol=2e-4, atol=1e-6)
    uncapped = closed < 1
    kept = closed * N
    assert uncapped.sum() >= 5
    np.testing.assert_allclose(kept[uncapped], kept[uncapped][0])  # p_l N_l equal
    assert np.all(N[~uncapped] <= kept[uncapped][0])  # small layers stay dense
    assert kept.sum() == pytest.approx(budget)


def test_water_filling_flops_only_equal_kept_macs():
    budget = 0.2 * F.sum()
    p = sparsity.solve_densities(N, F, max_macs=budget)
    closed = sparsity.water_filling(F, budget)
    np.testing.assert_allclose(p, closed, rtol=2e-4, atol=1e-6)
    assert closed[-1] == 1.0  # the 640-MAC classifier stays dense
    kept = (closed * F)[closed < 1]
    np.testing.assert_allclose(kept, kept[0])


def test_both_budgets_kkt_form():
    max_w, max_m = 0.10 * N.sum(), 0.12 * F.sum()
    p = sparsity.solve_densities(N, F, max_weights=max_w, max_macs=max_m)
    assert (p * N).sum() <= max_w * (1 + 1e-4)
    assert (p * F).sum() <= max_m * (1 + 1e-4)
    uncapped = p < 0.999
    # 1 / p_l = lambda N_l + nu F_l with lambda, nu >= 0 on every uncapped layer.
    a = np.stack([N[uncapped], F[uncapped]], axis=1)
    (lam, nu), *_ = np.linalg.lstsq(a, 1 / p[uncapped], rcond=None)
    np.testing.assert_allclose(a @ [lam, nu], 1 / p[uncapped], rtol=1e-3)
    assert lam > 0 and nu > 0  # both budgets bind here
    # Neither single-budget solution is feasible for the other budget.
    assert (sparsity.water_filling(N, max_w) * F).sum() > max_m
    assert (sparsity.water_filling(F, max_m) * N).sum() > max_w


def test_scale_to_budget_meets_tightest_budget():
    raw = np.array([1.0, 2.0, 4.0])
    p = densities.scale_to_budget(raw, [np.array([10.0, 10.0, 10.0])], [19.0])
    np.testing.assert_allclose(p, [0.3, 0.6, 1.0])
    p = densities.scale_to_budget(np.ones(2), [np.array([1.0, 3.0]), np.array([4.0, 0.0])], [2.0, 1.0])
    np.testing.assert_allclose(p, [0.25, 0.25])
    np.testing.assert_allclose(densities.scale_to_budget(np.ones(2), [np.ones(2)], [5.0]), [1, 1])


def _convnet():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(x), name="convnet")


def test_model_level_densities_meet_budgets():
    model = _convnet()
    kernels = sparsity.prunable_kernels(model)
    n = {k.key: k.weights for k in kernels}
    f = {k.key: k.macs for k in kernels}
    for fn in (sparsity.uniform_densities, sparsity.erk_densities, sparsity.optimal_densities):
        p = fn(model, flops=0.3)
        assert sum(p[k] * f[k] for k in p) == pytest.approx(0.3 * sum(f.values()), rel=1e-3)
        p = fn(model, density=0.2)
        assert sum(p[k] * n[k] for k in p) == pytest.approx(0.2 * sum(n.values()), rel=1e-3)
    assert all(v == pytest.approx(0.3) for v in sparsity.uniform_densities(model, flops=0.3).values())
    erk = sparsity.erk_densities(model, density=0.2)
    assert erk["fc/kernel"] > erk["c1/kernel"] > erk["c2/kernel"]  # ERK favours small layers
    nonkernel = model.count_params() - sum(n.values())
    p = sparsity.optimal_densities(model, params=0.5)
    kept = sum(p[k] * n[k] for k in p) + nonkernel
    assert kept == pytest.approx(0.5 * model.count_params(), rel=1e-3)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(density=1.5), ValueError, "`density` must be a ratio in (0, 1]. Received: density=1.5"),
        (dict(flops=0), ValueError, "`flops` must be a ratio in (0, 1]. Received: flops=0"),
        (dict(params="0.5"), TypeError, "`params` must be a number. Received: params='0.5'"),
        (dict(), ValueError, "Give a budget: flops=, params= or density= (ratios in (0, 1]). "
                             "Received: flops=None, params=None, density=None"),
        (dict(flops=0.5, density=0.5), ValueError, "`density` cannot be combined with `flops` or `params`. "
                                                   "Received: flops=0.5, params=None, density=0.5"),
    ],
)
def test_budget_errors(kwargs, error, message):
    with pytest.raises(error) as info:
        sparsity.uniform_densities(_convnet(), **kwargs)
    assert str(info.value) == message


def test_infeasible_params_budget_names_model_and_share():
    model = _convnet()
    with pytest.raises(ValueError, match=r"params=0\.01 is infeasible for model 'convnet': its non-prunable "
                                         r"parameters \(bias, normalization, \.\.\.\) alone are 0\.0402 of "
                                         r"count_params\(\)=1492\. Received: params=0\.01"):
        sparsity.optimal_densities(model, params=0.01)


def test_solver_needs_a_budget():
    with pytest.raises(ValueError, match=r"^Give max_weights= and/or max_macs=\. "
                                         r"Received: max_weights=None, max_macs=None$"):
        sparsity.solve_densities(N, F)
