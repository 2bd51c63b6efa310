"""Layer-wise densities: budgets, the convex optimum (docs/method.md § Layer-wise densities) and closed forms.

A *density* ``p_l`` is the fraction of layer ``l``'s kernel weights that is
kept. Budgets are ratios of the dense cost:

* ``flops=r``: kept kernel MACs <= ``r`` x dense MACs (FLOPs = 2 x MACs, the
  factor cancels; bias, BN, activations, adds and pooling carry no MACs);
* ``params=r``: kept kernel weights + every non-kernel parameter (bias, BN,
  ...) <= ``r`` x ``model.count_params()``;
* ``density=r``: kept kernel weights <= ``r`` x all kernel weights.

The §3 problem ``max sum_l log p_l  s.t.  sum_l F_l p_l <= F*, sum_l N_l p_l <=
N*, 0 < p_l <= 1`` is solved with cvxpy in log space (``x = log p``: a linear
objective and exponential-cone constraints). With one budget its KKT
conditions give ``p_l c_l`` equal across layers, capped at ``p_l = 1``
(water-filling, :func:`water_filling`); with both, ``1 / p_l = lambda N_l + nu
F_l`` for every uncapped layer.
"""

import dataclasses

import numpy as np

from tf_precrop import api
from tf_precrop.sparsity import prunable


@dataclasses.dataclass(frozen=True)
class Budget:
    """A budget in kernel-cost space (what the prunable kernels may keep).

    Attributes:
        max_macs: Kept kernel MACs allowed, or ``None`` (no FLOPs budget).
        max_weights: Kept kernel weights allowed, or ``None``.
        dense_macs: Dense kernel MACs of the model.
        dense_weights: Dense kernel weights of the model.
    """

    max_macs: float | None
    max_weights: float | None
    dense_macs: int
    dense_weights: int


def make_budget(model, kernels, *, flops=None, params=None, density=None):
    """Translates budget ratios into absolute kernel-cost limits.

    Args:
        model: The Keras 3 model (for ``count_params()``).
        kernels: Its :func:`~tf_precrop.sparsity.prunable.prunable_kernels`.
        flops: Ratio of dense MACs, or ``None``.
        params: Ratio of ``model.count_params()``, or ``None``.
        density: Ratio of kernel weights, or ``None``; excludes the others.

    Returns:
        A :class:`Budget`.

    Raises:
        TypeError: If a ratio is not a number.
        ValueError: If no budget is given, ``density`` is combined with another
            budget, a ratio is outside (0, 1], or ``params`` is below the share
            of non-prunable parameters.

    Example:
        >>> make_budget(model, prunable_kernels(model), flops=0.5).max_macs
        20480000.0
    """
    # One ratio check for the whole library (the core's), so both arms word their errors alike.
    flops = api.check_ratio("flops", flops)
    params = api.check_ratio("params", params)
    density = api.check_ratio("density", density)
    if flops is None and params is None and density is None:
        raise ValueError(
            "Give a budget: flops=, params= or density= (ratios in (0, 1]). "
            "Received: flops=None, params=None, density=None"
        )
    if density is not None and (flops is not None or params is not None):
        raise ValueError(
            "`density` cannot be combined with `flops` or `params`. "
            f"Received: flops={flops}, params={params}, density={density}"
        )
    dense_macs = sum(k.macs for k in kernels)
    dense_weights = sum(k.weights for k in kernels)
    max_weights = None
    if density is not None:
        max_weights = density * dense_weights
    if params is not None:
        total = model.count_params()
        fixed = total - dense_weights
        max_weights = params * total - fixed
        if max_weights <= 0:
            raise ValueError(
                f"params={params} is infeasible for model '{model.name}': its "
                "non-prunable parameters (bias, normalization, ...) alone are "
                f"{fixed / total:.4f} of count_params()={total}. "
                f"Received: params={params}"
            )
    max_macs = None if flops is None else flops * dense_macs
    return Budget(max_macs, max_weights, dense_macs, dense_weights)


def scale_to_budget(raw, costs, budgets):
    """Densities ``min(1, eps * raw)`` with the largest ``eps`` within budgets.

    Solves ``sum_l c_l min(1, eps raw_l) = B`` exactly for each
    ``(c, B)`` pair (the left side is piecewise linear in ``eps``) and keeps
    the smallest ``eps``, so every budget holds and the tightest one is met.

    Args:
        raw: Positive relative densities, shape ``(L,)``.
        costs: List of cost vectors (each shape ``(L,)``, positive).
        budgets: Matching list of budgets (same units as the costs).

    Returns:
        Densities in (0, 1], shape ``(L,)``.

    Raises:
        ValueError: If ``raw`` has a non-positive entry or ``costs`` and
            ``budgets`` differ in length.

    Example:
        >>> scale_to_budget(np.ones(2), [np.array([1., 3.])], [2.0])
        array([0.5, 0.5])
    """
    raw = np.asarray(raw, dtype=np.float64)
    if np.any(raw <= 0) or not np.all(np.isfinite(raw)):
        raise ValueError(f"`raw` densities must be positive and finite. Received: raw={raw}")
    if len(costs) != len(budgets):
        raise ValueError(
            "`costs` and `budgets` must have the same length. "
            f"Received: {len(costs)} costs and {len(budgets)} budgets"
        )
    eps = np.inf
    for c, b in zip(costs, budgets):
        c = np.asarray(c, dtype=np.float64)
        if c.sum() <= b:
            continue
        # Breakpoints eps_l = 1 / raw_l: below them layer l is uncapped.
        order = np.argsort(1.0 / raw)
        brk = 1.0 / raw[order]
        cs, rs = c[order], (c * raw)[order]
        # With the first j layers capped: cost(eps) = sum(cs[:j]) + eps * sum(rs[j:]).
        capped = np.concatenate([[0.0], np.cumsum(cs)])
        slope = np.concatenate([np.cumsum(rs[::-1])[::-1], [0.0]])
        for j in range(len(raw)):
            e = (b - capped[j]) / slope[j]
            if e <= brk[j]:
                eps = min(eps, e)
                break
    return np.minimum(1.0, eps * raw)


def water_filling(costs, budget):
    """Closed-form optimum of §3 with a single budget.

    ``max sum log p_l  s.t.  sum c_l p_l <= budget, p_l <= 1`` gives ``p_l c_l``
    equal for every uncapped layer; small layers stay dense (``p_l = 1``).

    Args:
        costs: Per-layer dense costs ``c_l`` (weights or MACs), shape ``(L,)``.
        budget: Allowed total, same units.

    Returns:
        Densities in (0, 1], shape ``(L,)``.

    Example:
        >>> water_filling(np.array([1., 10., 100.]), 11.0)
        array([1. , 0.5, 0.05])
    """
    costs = np.asarray(costs, dtype=np.float64)
    return scale_to_budget(1.0 / costs, [costs], [budget])


def solve_densities(weights, macs, *, max_weights=None, max_macs=None):
    """Solves docs/method.md § Layer-wise densities with cvxpy: ``max sum log p`` under kernel budgets.

    Variables are ``x = log p`` so the objective is linear and each budget is
    ``sum c_l exp(x_l) <= B`` (exponential cone, CLARABEL).

    Args:
        weights: Dense kernel weights ``N_l`` per layer, shape ``(L,)``.
        macs: Dense kernel MACs ``F_l`` per layer, shape ``(L,)``.
        max_weights: Kept-weights budget ``N*`` or ``None``.
        max_macs: Kept-MACs budget ``F*`` or ``None``.

    Returns:
        Optimal densities in (0, 1], shape ``(L,)``.

    Raises:
        ValueError: If neither budget is given or cvxpy finds no optimum.

    Example:
        >>> solve_densities(np.array([10., 100.]), np.array([100., 100.]), max_macs=100.)
        array([0.5, 0.5])
    """
    import cvxpy as cp  # pylint: disable=import-outside-toplevel

    if max_weights is None and max_macs is None:
        raise ValueError(
            "Give max_weights= and/or max_macs=. "
            "Received: max_weights=None, max_macs=None"
        )
    n = len(weights)
    x = cp.Variable(n)
    constraints = [x <= 0]
    for costs, budget in ((weights, max_weights), (macs, max_macs)):
        if budget is not None:
            scaled = np.asarray(costs, dtype=np.float64) / float(budget)
            constraints.append(cp.sum(cp.multiply(scaled, cp.exp(x))) <= 1.0)
    problem = cp.Problem(cp.Maximize(cp.sum(x)), constraints)
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or x.value is None:
        raise ValueError(f"The density problem has no optimum (cvxpy status: {problem.status}).")
    return np.minimum(1.0, np.exp(x.value))


def _kernel_arrays(kernels):
    return (
        np.array([k.weights for k in kernels], dtype=np.float64),
        np.array([k.macs for k in kernels], dtype=np.float64),
    )


def _scaled(model, raw_fn, flops, params, density):
    kernels = prunable.prunable_kernels(model)
    budget = make_budget(model, kernels, flops=flops, params=params, density=density)
    n, f = _kernel_arrays(kernels)
    costs, budgets = [], []
    if budget.max_weights is not None:
        costs.append(n)
        budgets.append(budget.max_weights)
    if budget.max_macs is not None:
        costs.append(f)
        budgets.append(budget.max_macs)
    p = scale_to_budget(raw_fn(kernels), costs, budgets)
    return {k.key: float(v) for k, v in zip(kernels, p)}


def uniform_densities(model, *, flops=None, params=None, density=None):
    """The same density in every prunable kernel, scaled to the budget.

    Args:
        model: A built Keras 3 model.
        flops: Ratio of dense MACs, or ``None``.
        params: Ratio of ``count_params()``, or ``None``.
        density: Ratio of kernel weights, or ``None``.

    Returns:
        A dict ``{kernel key: density}``.

    Raises:
        ValueError: On a missing, out-of-range or infeasible budget.

    Example:
        >>> set(uniform_densities(model, flops=0.3).values())
        {0.3}
    """
    return _scaled(model, lambda ks: np.ones(len(ks)), flops, params, density)


def erk_densities(model, *, flops=None, params=None, density=None):
    """Erdős-Rényi-Kernel densities, scaled to the budget and capped at 1.

    ``p_l`` is proportional to ``sum(kernel shape) / prod(kernel shape)``, i.e.
    ``(C_in + C_out + k_h + k_w) / (C_in C_out k_h k_w)`` for a 2-D conv.

    Args:
        model: A built Keras 3 model.
        flops: Ratio of dense MACs, or ``None``.
        params: Ratio of ``count_params()``, or ``None``.
        density: Ratio of kernel weights, or ``None``.

    Returns:
        A dict ``{kernel key: density}``.

    Raises:
        ValueError: On a missing, out-of-range or infeasible budget.

    Example:
        >>> erk_densities(model, density=0.1)["conv1/kernel"]
        1.0
    """

    def raw(kernels):
        return np.array([sum(k.shape) / k.weights for k in kernels])

    return _scaled(model, raw, flops, params, density)


def optimal_densities(model, *, flops=None, params=None, density=None):
    """The §3 optimum: ``max sum log p_l`` under the budget(s), via cvxpy.

    Args:
        model: A built Keras 3 model.
        flops: Ratio of dense MACs, or ``None``.
        params: Ratio of ``count_params()``, or ``None``.
        density: Ratio of kernel weights, or ``None``.

    Returns:
        A dict ``{kernel key: density}``.

    Raises:
        ValueError: On a missing, out-of-range or infeasible budget.

    Example:
        >>> p = optimal_densities(model, flops=0.5, params=0.6)
    """
    kernels = prunable.prunable_kernels(model)
    budget = make_budget(model, kernels, flops=flops, params=params, density=density)
    n, f = _kernel_arrays(kernels)
    p = solve_densities(n, f, max_weights=budget.max_weights, max_macs=budget.max_macs)
    return {k.key: float(v) for k, v in zip(kernels, p)}
