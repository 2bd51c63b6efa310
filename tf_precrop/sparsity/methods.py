"""The named pruning-at-initialization methods, one function each.

Two families, both returning :class:`~tf_precrop.sparsity.masks.Masks` that
meet the budget exactly (within one weight for score methods, within the
rounding of ``p_l N_l`` for density rules):

* score methods (``synflow``, ``snip``, ``grasp``, ``magnitude``, ``random``)
  rank all weights globally and keep the highest within the budget;
* density rules (``erk``, ``uniform``, ``optimal``, ``synflow_random``) fix
  per-layer densities and draw random masks at them (any granularity).
"""

import numpy as np

from tf_precrop.sparsity import densities as densities_lib
from tf_precrop.sparsity import masks as masks_lib
from tf_precrop.sparsity import prunable
from tf_precrop.sparsity import scores as scores_lib

METHODS = (
    "synflow",
    "snip",
    "grasp",
    "magnitude",
    "random",
    "erk",
    "uniform",
    "optimal",
    "synflow_random",
)


def _finish(model, keep, method, info):
    out = masks_lib.Masks(
        {k.key: np.asarray(m, dtype="float32") for k, m in zip(prunable.prunable_kernels(model), keep)},
        dict(info, method=method),
    )
    out.info["achieved"] = masks_lib.masked_cost(model, out)
    return out


def _scored(model, method, scores, budget_kwargs, seed):
    kernels = prunable.prunable_kernels(model)
    budget = densities_lib.make_budget(model, kernels, **budget_kwargs)
    keep = masks_lib.select_top(
        kernels, scores, max_macs=budget.max_macs, max_weights=budget.max_weights
    )
    return _finish(model, keep, method, dict(budget_kwargs, seed=seed))


def synflow(model, *, flops=None, params=None, density=None, seed=0, iterations=100):
    """SynFlow masks (docs/method.md § SynFlow and SynExp): iterative, data-free, global threshold.

    Args:
        model: A built Keras 3 model with a static input shape.
        flops: Target ratio of dense MACs (effective MACs), or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Unused by SynFlow (deterministic); kept for a uniform signature.
        iterations: Prune-rescore steps (100 in the paper).

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`; ``info`` records the
        budget, ``achieved`` costs and whether the overflow rescaling was used.

    Raises:
        ValueError: On a missing, out-of-range or infeasible budget or bad
            ``iterations``.

    Example:
        >>> masks = sparsity.synflow(model, flops=0.5)
        >>> round(masks.info["achieved"]["macs_ratio"], 3)
        0.5
    """
    kernels = prunable.prunable_kernels(model)
    budget = densities_lib.make_budget(model, kernels, flops=flops, params=params, density=density)
    keep, info = scores_lib.synflow_keep(
        model,
        max_macs=budget.max_macs,
        max_weights=budget.max_weights,
        dense_macs=budget.dense_macs,
        dense_weights=budget.dense_weights,
        iterations=iterations,
    )
    info.update(flops=flops, params=params, density=density, seed=seed)
    return _finish(model, keep, "synflow", info)


def snip(model, *, flops=None, params=None, density=None, seed=0, batches=None):
    """SNIP masks: ``|dL/dw ⊙ w|`` on ``batches``, global threshold.

    Args:
        model: A built Keras 3 classifier.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Recorded in ``info`` only.
        batches: Iterable of ``(x, y)`` numpy pairs (required).

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a bad budget or missing ``batches``.

    Example:
        >>> masks = sparsity.snip(model, density=0.1, batches=[(x, y)])
    """
    scores = scores_lib.snip_scores(model, batches)
    return _scored(model, "snip", scores, dict(flops=flops, params=params, density=density), seed)


def grasp(model, *, flops=None, params=None, density=None, seed=0, batches=None):
    """GraSP masks: keep the highest ``θ ⊙ Hg`` (gradient-flow preserving).

    Args:
        model: A built Keras 3 classifier.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Recorded in ``info`` only.
        batches: Iterable of ``(x, y)`` numpy pairs (required).

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a bad budget or missing ``batches``.

    Example:
        >>> masks = sparsity.grasp(model, density=0.1, batches=[(x, y)])
    """
    scores = scores_lib.grasp_scores(model, batches)
    return _scored(model, "grasp", scores, dict(flops=flops, params=params, density=density), seed)


def magnitude(model, *, flops=None, params=None, density=None, seed=0):
    """Global magnitude masks (keep the largest ``|w|``).

    Args:
        model: A built Keras 3 model.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Recorded in ``info`` only.

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a missing, out-of-range or infeasible budget.

    Example:
        >>> masks = sparsity.magnitude(model, params=0.3)
    """
    scores = scores_lib.magnitude_scores(model)
    return _scored(model, "magnitude", scores, dict(flops=flops, params=params, density=density), seed)


def random(model, *, flops=None, params=None, density=None, seed=0):
    """Random masks from a global random ranking (about uniform density).

    Args:
        model: A built Keras 3 model.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Seed of the ranking.

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a missing, out-of-range or infeasible budget.

    Example:
        >>> masks = sparsity.random(model, flops=0.5, seed=3)
    """
    scores = scores_lib.random_scores(model, seed)
    return _scored(model, "random", scores, dict(flops=flops, params=params, density=density), seed)


def _from_densities(model, method, dens, granularity, seed, info):
    out = masks_lib.random_masks(model, dens, granularity=granularity, seed=seed)
    out.info = dict(info, method=method, granularity=granularity, seed=seed, target_densities=dens)
    out.info["achieved"] = masks_lib.masked_cost(model, out)
    return out


def erk(model, *, flops=None, params=None, density=None, seed=0, granularity="weight"):
    """Random masks at ERK densities scaled to the budget.

    Args:
        model: A built Keras 3 model.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Seed of the random masks.
        granularity: ``"weight"``, ``"kernel"`` or ``"filter"``.

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a bad budget or granularity.

    Example:
        >>> masks = sparsity.erk(model, density=0.1)
    """
    budget = dict(flops=flops, params=params, density=density)
    dens = densities_lib.erk_densities(model, **budget)
    return _from_densities(model, "erk", dens, granularity, seed, budget)


def uniform(model, *, flops=None, params=None, density=None, seed=0, granularity="weight"):
    """Random masks with the same density in every kernel.

    Args:
        model: A built Keras 3 model.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Seed of the random masks.
        granularity: ``"weight"``, ``"kernel"`` or ``"filter"``.

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a bad budget or granularity.

    Example:
        >>> masks = sparsity.uniform(model, flops=0.5)
    """
    budget = dict(flops=flops, params=params, density=density)
    dens = densities_lib.uniform_densities(model, **budget)
    return _from_densities(model, "uniform", dens, granularity, seed, budget)


def optimal(model, *, flops=None, params=None, density=None, seed=0, granularity="weight"):
    """Random masks at the §3 optimum densities ("the paper's densities").

    Args:
        model: A built Keras 3 model.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Seed of the random masks.
        granularity: ``"weight"``, ``"kernel"`` or ``"filter"``.

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a bad budget or granularity.

    Example:
        >>> masks = sparsity.optimal(model, flops=0.5, params=0.6)
    """
    budget = dict(flops=flops, params=params, density=density)
    dens = densities_lib.optimal_densities(model, **budget)
    return _from_densities(model, "optimal", dens, granularity, seed, budget)


def synflow_random(model, *, flops=None, params=None, density=None, seed=0,
                   granularity="weight", iterations=100):
    """Random masks at SynFlow's per-layer densities (tests "density, not which").

    Args:
        model: A built Keras 3 model.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Seed of the random masks.
        granularity: ``"weight"``, ``"kernel"`` or ``"filter"``.
        iterations: SynFlow iterations.

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On a bad budget or granularity.

    Example:
        >>> masks = sparsity.synflow_random(model, flops=0.1, granularity="filter")
    """
    if granularity not in masks_lib.GRANULARITIES:
        raise ValueError(
            f"`granularity` must be one of {masks_lib.GRANULARITIES}. "
            f"Received: granularity={granularity!r}"
        )
    budget = dict(flops=flops, params=params, density=density)
    dens = synflow(model, **budget, iterations=iterations).densities()
    return _from_densities(model, "synflow_random", dens, granularity, seed, budget)


#: Method name -> function (the names of :data:`METHODS`, in order).
_BY_NAME = {"synflow": synflow, "snip": snip, "grasp": grasp, "magnitude": magnitude, "random": random,
            "erk": erk, "uniform": uniform, "optimal": optimal, "synflow_random": synflow_random}
assert tuple(_BY_NAME) == METHODS


def compute_masks(method, model, *, flops=None, params=None, density=None, seed=0,
                  batches=None, **kwargs):
    """Masks by method name (the function of that name in this module).

    Args:
        method: One of :data:`METHODS`.
        model: A built Keras 3 model.
        flops: Target ratio of dense MACs, or ``None``.
        params: Target ratio of ``count_params()``, or ``None``.
        density: Target ratio of kernel weights, or ``None``.
        seed: Random seed.
        batches: ``(x, y)`` batches, used by ``"snip"`` and ``"grasp"`` only.
        **kwargs: Method-specific options (``iterations``, ``granularity``).

    Returns:
        :class:`~tf_precrop.sparsity.masks.Masks`.

    Raises:
        ValueError: On an unknown method, a bad budget, or ``batches`` given to
            a method that does not use data.
        TypeError: On an option the method does not take.

    Example:
        >>> masks = sparsity.compute_masks("erk", model, flops=0.5)
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    fn = _BY_NAME[method]
    budget = dict(flops=flops, params=params, density=density, seed=seed)
    if method in ("snip", "grasp"):
        return fn(model, **budget, batches=batches, **kwargs)
    if batches is not None:
        raise ValueError(
            f"method={method!r} does not use data; only 'snip' and 'grasp' take batches."
        )
    return fn(model, **budget, **kwargs)
