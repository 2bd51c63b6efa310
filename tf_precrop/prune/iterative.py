"""Iterative pruning: prune a little, fine-tune, prune again, until the final budget (Han et al. 2015)."""

from __future__ import annotations

from tf_precrop import api as api_lib
from tf_precrop import cost as cost_lib
from tf_precrop.prune.api import prune


def prune_iteratively(model, *, flops=None, params=None, steps: int = 3, fine_tune=None, **prune_kwargs):
    """Reaches the budget in ``steps`` pruning steps, calling ``fine_tune`` after each.

    Step k targets ``budget ** (k / steps)`` of the original model's MACs (params): each step removes the
    same fraction of what is left. Each step plans on the current (already pruned, fine-tuned) model, so
    channel importance is re-measured after every fine-tune.

    Args:
        model: the trained Keras 3 model (not modified).
        flops: final MACs (= FLOPs) budget, a ratio in (0, 1] of ``model``'s.
        params: final params budget, a ratio in (0, 1].
        steps: number of pruning steps (>= 1).
        fine_tune: callable ``(model, step) -> model or None`` run after each step (e.g. a few epochs of
            ``fit``; return a new model or None to keep the one it was given). None: no fine-tuning.
        **prune_kwargs: passed to ``tf_precrop.prune`` (``importance``, ``round_to``, ``uniform``,
            ``ignored_layers``, ``data``, ``loss``, ``seed``...); ``plan`` is not accepted.

    Returns:
        The final pruned model.

    Raises:
        ValueError: for ``steps`` < 1, a ``plan`` argument, and as ``tf_precrop.prune``.

    Example:
        >>> def fine_tune(m, step):
        ...     m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        ...     m.fit(train_ds, epochs=1)
        >>> small = tf_precrop.prune_iteratively(trained, flops=0.25, steps=3, fine_tune=fine_tune)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer. Received: steps={steps!r}")
    if "plan" in prune_kwargs:
        raise ValueError("prune_iteratively plans every step itself; pass budgets, not a plan. Received: plan")
    flops = api_lib.check_ratio("flops", flops)
    params = api_lib.check_ratio("params", params)
    if flops is None and params is None:
        raise ValueError("At least one budget is required. Received: flops=None, params=None")
    dense = cost_lib.count(model)
    current = model
    for step in range(1, steps + 1):
        now = cost_lib.count(current)
        budgets = {}
        if flops is not None:
            budgets["flops"] = min(1.0, dense.macs * flops ** (step / steps) / now.macs)
        if params is not None:
            budgets["params"] = min(1.0, dense.params * params ** (step / steps) / now.params)
        if all(b >= 1.0 for b in budgets.values()):
            continue
        current = prune(current, **budgets, **prune_kwargs)
        if fine_tune is not None:
            current = fine_tune(current, step) or current
    return current
