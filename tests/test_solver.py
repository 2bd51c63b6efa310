"""The PreCrop geometric program: closed forms (KKT), budgets met, rounding, uniform baseline."""

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop import cost as cost_lib
from tf_precrop import solver
from tf_precrop.graph.walker import ModelGraph


def _chain(widths=(32, 64, 48, 96), spatial=8, kernel=3):
    """A plain conv chain without bias or BN: params are exactly the kernel weights."""
    inputs = keras.Input((spatial, spatial, 3))
    x = inputs
    for i, w in enumerate(widths):
        x = keras.layers.Conv2D(w, kernel, padding="same", use_bias=False, name=f"c{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, use_bias=False, name="fc")(x)
    return keras.Model(inputs, outputs, name="chain")


def _continuous(model, budgets):
    graph = ModelGraph(model)
    problem = solver.Problem(graph)
    log_c = solver.solve_continuous(problem, budgets)
    return graph, problem, log_c


def _kept_weights(graph, problem, log_c):
    ratio = dict(zip(problem.roots, np.exp(log_c)))
    per_layer = {}
    for term in graph.terms:
        if term.kind == "params" and term.kernel:
            value = cost_lib.term_value(graph, term, lambda r: ratio.get(r, 1.0))
            per_layer[term.layer] = per_layer.get(term.layer, 0.0) + value
    return per_layer


def _kkt(log_c, per_group_sums):
    """KKT of max sum a_g log c_g s.t. cost <= B (a_g = 2 on a chain): interior groups share one value of
    the summed kept cost of their two layers; groups held at c = 1 have a smaller (or equal) one."""
    interior = [s for x, s in zip(log_c, per_group_sums) if x < -1e-4]
    capped = [s for x, s in zip(log_c, per_group_sums) if x >= -1e-4]
    assert len(interior) >= 2
    np.testing.assert_allclose(interior, interior[0], rtol=1e-4)
    assert all(s <= interior[0] * (1 + 1e-4) for s in capped)


def test_params_budget_kkt_on_a_chain():
    """docs/method.md § The program: at an interior optimum every hidden group keeps the same weights over its
    2 layers."""
    model = _chain()
    graph, problem, log_c = _continuous(model, {"params": 0.3})
    kept = _kept_weights(graph, problem, log_c)
    # Group i sits between layer c{i} and the next one.
    _kkt(log_c, [kept["c0"] + kept["c1"], kept["c1"] + kept["c2"], kept["c2"] + kept["c3"], kept["c3"] + kept["fc"]])
    # The binding budget is met with equality by the continuous solution.
    assert problem.ratio_at("params", log_c) == pytest.approx(0.3, rel=1e-5)


def test_flops_budget_kkt_on_a_chain():
    """With MACs only: a_g = lambda * sum of the kept MACs of the layers containing g."""
    model = _chain()
    graph, problem, log_c = _continuous(model, {"macs": 0.4})
    ratio = dict(zip(problem.roots, np.exp(log_c)))
    macs = {}
    for term in graph.terms:
        if term.kind == "macs":
            macs[term.layer] = cost_lib.term_value(graph, term, lambda r: ratio.get(r, 1.0))
    _kkt(log_c, [macs["c0"] + macs["c1"], macs["c1"] + macs["c2"], macs["c2"] + macs["c3"], macs["c3"] + macs["fc"]])
    assert problem.ratio_at("macs", log_c) == pytest.approx(0.4, rel=1e-5)


def _monomial(c, powers):
    out = 1.0
    for j, p in enumerate(powers):
        if p:
            out = out * c[j] ** float(p)
    return out


def test_log_space_form_equals_cvxpy_gp():
    """The shipped log-space program and cvxpy's own `gp=True` formulation find the same ratios."""
    import cvxpy as cp

    model = _chain(widths=(16, 24, 32))
    graph, problem, log_c = _continuous(model, {"macs": 0.5, "params": 0.45})
    c = cp.Variable(len(problem.roots), pos=True)
    constraints = [c <= 1, c >= np.exp(problem.min_log)]
    for kind, budget in (("macs", 0.5), ("params", 0.45)):
        posy = problem.costs[kind]
        exps = posy.dense_matrix()
        total = sum(coef / problem.dense_cost[kind] * _monomial(c, exps[t]) for t, coef in enumerate(posy.coef))
        constraints.append(total <= budget)
    objective = _monomial(c, problem.objective)
    cp.Problem(cp.Maximize(objective), constraints).solve(gp=True)
    np.testing.assert_allclose(np.exp(log_c), c.value, rtol=2e-3)


def test_integer_plan_meets_budget_and_is_close():
    model = _chain(widths=(64, 128, 96, 256))
    for round_to in (1, 8):
        plan = tf_precrop.plan(model, flops=0.5, round_to=round_to)
        assert plan.macs_ratio <= 0.5
        assert plan.macs_ratio >= 0.45
        for name, width in plan.widths.items():
            if name != "fc":
                assert width % round_to == 0, (name, width)
        assert plan.widths["fc"] == 10  # the classifier output is fixed


def test_both_budgets_hold():
    model = _chain(widths=(64, 128, 96, 256))
    plan = tf_precrop.plan(model, flops=0.6, params=0.3)
    assert plan.macs_ratio <= 0.6 and plan.params_ratio <= 0.3
    assert max(plan.macs_ratio / 0.6, plan.params_ratio / 0.3) > 0.95  # at least one binds


def test_uniform_shares_one_ratio():
    model = _chain(widths=(64, 128, 96, 256))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    assert plan.macs_ratio <= 0.5
    ratios = [g.width / g.dense_width for g in plan.groups if g.fixed is None]
    assert max(ratios) - min(ratios) < 0.02


def test_minimum_width_is_one_or_round_to():
    model = _chain(widths=(16, 16, 16))
    plan = tf_precrop.plan(model, flops=0.1, round_to=4)
    assert all(w >= 4 for n, w in plan.widths.items() if n != "fc")


def test_rounding_is_near_the_integer_optimum():
    """Brute force over every multiple-of-8 width on a 4-group chain: the rounded plan's geometric-mean
    density is within 2% of the best integer plan under the same budget."""
    import itertools

    model = _chain(widths=(64, 128, 96, 256))
    problem = solver.Problem(ModelGraph(model), round_to=8)
    logs = [np.log(a / d) for a, d in zip(problem.allowed, problem.dense)]
    best = -np.inf
    for combo in itertools.product(*logs):
        x = np.array(combo)
        if problem.ratio_at("macs", x) <= 0.5:
            best = max(best, float(problem.objective @ x))
    plan = tf_precrop.plan(model, flops=0.5, round_to=8)
    ours = float(problem.objective @ np.log([g.width / g.dense_width for g in plan.groups if g.fixed is None]))
    assert plan.macs_ratio <= 0.5
    assert np.exp((ours - best) / problem.objective.sum()) >= 0.98
