"""Public entry points: ``plan``, ``crop``, ``preconfig``. Argument checking and friendly errors live here."""

from __future__ import annotations

import numbers

from tf_precrop import latency_model as latency_model_lib
from tf_precrop import plan as plan_lib
from tf_precrop import rebuild as rebuild_lib
from tf_precrop import solver, verify
from tf_precrop.graph import registry
from tf_precrop.graph.walker import ModelGraph
from tf_precrop.plan import CropPlan

#: Default upper bound of a group's width ratio in ``preconfig`` (documented in docs/method.md).
DEFAULT_MAX_RATIO = 2.0
#: ``preconfig`` must reach at least this fraction of its target budget.
PRECONFIG_TOLERANCE = 0.98


def check_ratio(name: str, value, *, upper: float | None = 1.0, hint: str = "") -> float | None:
    """Validates a budget ratio argument; returns it as a float (None passes through)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
    value = float(value)
    if not value > 0 or (upper is not None and value > upper):
        bound = f"(0, {upper:g}]" if upper is not None else "(0, inf)"
        raise ValueError(f"`{name}` must be a ratio in {bound}. Received: {name}={value:g}{hint}")
    return value


def _check_round_to(round_to):
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise ValueError(f"`round_to` must be a positive integer. Received: round_to={round_to!r}")
    return int(round_to)


def check_round_to(round_to) -> int:
    """Validates a ``round_to`` argument (a positive integer); returns it as an int.

    Raises:
        ValueError: naming the value, e.g. "Received: round_to=0".
    """
    return _check_round_to(round_to)


def _check_latency(latency, latency_model):
    latency = check_ratio("latency", latency, upper=1.0)
    if latency_model is not None and not isinstance(latency_model, latency_model_lib.LatencyModel):
        raise TypeError("`latency_model` must be a tf_precrop.LatencyModel. Received: latency_model of type "
                        f"{type(latency_model).__name__}")
    if latency is not None and latency_model is None:
        raise ValueError(
            "A latency budget needs the latency model of the target device. Pass latency_model= (e.g. "
            "tf_precrop.export.calibrate_latency(model) on that device, or tf_precrop.LatencyModel.from_json). "
            f"Received: latency={latency:g}, latency_model=None"
        )
    return latency


def _check_ignored(ignored_layers):
    if isinstance(ignored_layers, str):
        raise TypeError(
            f"`ignored_layers` must be a list of layer names, not a string. Received: ignored_layers={ignored_layers!r}"
        )
    return tuple(ignored_layers)


def plan(model, *, flops=None, params=None, max_ratio: float = 1.0, round_to: int = 1, ignored_layers=(),
         uniform: bool = False, latency=None, latency_model=None, custom_rules=None) -> CropPlan:
    """Solves for the per-layer widths of a cropped (or re-configured) model, without building it.

    The channel groups of ``model`` (widths tied by adds, concatenations, depthwise convs, squeeze-excite
    gates...) get ratios ``c_g`` that maximize ``sum_l log p_l`` (``p_l`` = kept fraction of layer l's
    kernel weights) under the budgets; then integer widths are chosen and repaired to meet the budgets.

    Args:
        model: a Keras 3 functional or Sequential model with a fixed input shape.
        flops: MACs budget as a ratio of the dense model's (FLOPs = 2 x MACs, so the ratio is the same).
        params: params budget as a ratio of ``model.count_params()``.
        max_ratio: upper bound of every group's width ratio. 1.0 (default) only shrinks (PreCrop); > 1 lets
            groups grow (PreConfig, see ``preconfig``).
        round_to: new widths are multiples of this (e.g. 8 for aligned, faster kernels); a group narrower
            than ``round_to`` keeps its width.
        ignored_layers: names of layers whose input and output widths stay fixed (also how an unknown
            layer such as ``Lambda`` is accepted).
        uniform: one ratio shared by every croppable group (the uniform width-scaling baseline), solved to
            the same budgets.
        latency: budget on the latency ``latency_model`` predicts, as a ratio in (0, 1] of the dense
            model's (beyond the paper: MACs miss the memory traffic that dominates batch-1 CPU latency).
        latency_model: a ``tf_precrop.LatencyModel`` of the target device; required with ``latency``, and
            when given alone the plan still reports the predicted latency.
        custom_rules: ``{layer class: rule}`` for this call only (a rule name as in ``register_layer`` or a
            ``tf_precrop.Rule`` instance), consulted before the global registry.

    Returns:
        A ``CropPlan`` (groups, widths, dense and new MACs/params, predicted latency when a latency model
        is given, achieved ratios, timings; ``summary()``, ``to_json()``). It records the ignored layers,
        the custom rules' class names and a fingerprint of the model, so ``crop(model, plan)`` needs neither
        re-walking nor ``ignored_layers`` again.

    Raises:
        TypeError: if ``model`` is not a Keras model or a budget is not a number.
        ValueError: for subclassed models, unknown layers, unknown input dimensions, budgets outside
            (0, max_ratio], budgets no allowed widths can meet, or ``latency`` without ``latency_model``.

    Example:
        >>> model = keras.applications.MobileNetV2(weights=None)
        >>> p = tf_precrop.plan(model, flops=0.5, round_to=8)
        >>> print(p.summary())
        >>> fast = tf_precrop.plan(model, latency=0.5, latency_model=my_device, round_to=8)
    """
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, numbers.Real) or not max_ratio >= 1:
        raise ValueError(f"`max_ratio` must be a number >= 1. Received: max_ratio={max_ratio!r}")
    hint = "" if max_ratio > 1 else ". To redistribute width at equal or higher cost, use tf_precrop.preconfig()."
    flops = check_ratio("flops", flops, upper=None if max_ratio > 1 else 1.0, hint=hint)
    params = check_ratio("params", params, upper=None if max_ratio > 1 else 1.0, hint=hint)
    latency = _check_latency(latency, latency_model)
    if flops is None and params is None and latency is None:
        raise ValueError("At least one budget is required. Received: flops=None, params=None, latency=None")
    round_to = _check_round_to(round_to)
    ignored_layers = _check_ignored(ignored_layers)
    custom_rules = registry.resolve_rules(custom_rules)
    graph = ModelGraph(model, ignored_layers=ignored_layers, custom_rules=custom_rules)
    budgets = {k: v for k, v in ((registry.MACS, flops), (registry.PARAMS, params), (solver.LATENCY, latency))
               if v is not None}
    solution = solver.solve(graph, budgets, round_to=round_to, max_ratio=float(max_ratio), uniform=uniform,
                            latency_model=latency_model)
    return plan_lib.make_plan(graph, solution, budgets=budgets, round_to=round_to, max_ratio=float(max_ratio),
                              uniform=uniform, latency_model=latency_model, ignored_layers=ignored_layers,
                              custom_rules=custom_rules)


_plan = plan  # `crop` takes an argument named `plan`


def crop(model, plan: CropPlan | None = None, *, flops=None, params=None, round_to: int = 1, ignored_layers=(),
         uniform: bool = False, seed: int | None = None, latency=None, latency_model=None, custom_rules=None):
    """Returns a new, narrower, freshly initialised Keras 3 model (PreCrop).

    Args:
        model: a Keras 3 functional or Sequential model with a fixed input shape. It is not modified.
        plan: a ``CropPlan`` of this model to apply (from ``plan()`` or ``CropPlan.from_json``); when given,
            no budget arguments may be passed.
        flops: MACs (= FLOPs) budget as a ratio in (0, 1] of the dense model's.
        params: params budget as a ratio in (0, 1] of ``model.count_params()``.
        round_to: new widths are multiples of this (8 gives aligned, faster kernels on CPU).
        ignored_layers: names of layers whose input and output widths stay fixed. With a ``plan``, the plan's
            own are used (pass them only with plans written before format_version 2).
        uniform: one shared width ratio for every group (the uniform width-scaling baseline).
        seed: seed for the fresh initial weights (``keras.utils.set_random_seed``); None leaves the global
            random state as it is.
        latency: budget on predicted latency, a ratio in (0, 1] (see ``plan``); needs ``latency_model``.
        latency_model: a ``tf_precrop.LatencyModel`` of the target device.
        custom_rules: ``{layer class: rule}`` for this call (see ``plan``); a plan made with custom rules
            needs the same ones again (rules are code, the plan stores only their names).

    Returns:
        A new ``keras.Model`` with the same topology and layer names and new widths, checked against the
        plan: its ``count_params()`` and every layer's MACs and params are the planned ones.

    Raises:
        TypeError: if ``model`` is not a Keras model or ``plan`` is not a CropPlan.
        ValueError: as ``plan()``; also if both ``plan`` and budgets are given, the plan was made for a
            different model, or with ignored layers or custom rules this call contradicts or lacks.
        tf_precrop.verify.PlanMismatchError: if the rebuilt model differs from the plan (a bug; the model
            is not returned).

    Example:
        >>> model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
        >>> small = tf_precrop.crop(model, flops=0.5, round_to=8)
        >>> fast = tf_precrop.crop(model, latency=0.5, latency_model=my_device, round_to=8)
    """
    custom_rules = registry.resolve_rules(custom_rules)
    if plan is None:
        plan = _plan(model, flops=flops, params=params, round_to=round_to, ignored_layers=ignored_layers,
                     uniform=uniform, latency=latency, latency_model=latency_model, custom_rules=custom_rules)
        ignored_layers = plan.ignored_layers
    else:
        if not isinstance(plan, CropPlan):
            raise TypeError(f"`plan` must be a tf_precrop.CropPlan. Received: plan of type {type(plan).__name__}")
        if flops is not None or params is not None or latency is not None:
            raise ValueError(
                f"Pass either a plan or budgets, not both. Received: plan and flops={flops}, params={params}"
                + ("" if latency is None else f", latency={latency}")
            )
        ignored_layers = _plan_context(model, plan, _check_ignored(ignored_layers), custom_rules)
    new_model = rebuild_lib.rebuild(model, plan.updates, seed=seed, custom_rules=custom_rules)
    verify.check_model_matches_plan(new_model, plan, ignored_layers=ignored_layers, custom_rules=custom_rules)
    return new_model


def preconfig(model, *, flops=1.0, params=None, max_ratio: float = DEFAULT_MAX_RATIO, round_to: int = 1,
              ignored_layers=(), seed: int | None = None, custom_rules=None):
    """Redistributes width at (about) the dense cost: some layers shrink, others grow (PreConfig).

    The same geometric program as ``crop`` with ratios up to ``max_ratio``. ``flops`` is the cost to
    reach (default: the dense model's MACs); ``params`` is an optional cap. With a FLOPs budget alone,
    params usually *rise* (width moves to low-resolution layers, which hold many params per MAC); the
    paper's EfficientNetB0 point, same FLOPs at 80% of the params, is ``flops=1.0, params=0.8``.

    Args:
        model: a Keras 3 functional or Sequential model with a fixed input shape. It is not modified.
        flops: MACs budget as a ratio of the dense model's; may exceed 1. None to budget params only.
        params: params budget (cap) as a ratio of ``model.count_params()``; may exceed 1.
        max_ratio: largest width ratio of any group (default 2.0). Its value drives the result: see
            benchmarks/results/preconfig.md.
        round_to: new widths are multiples of this.
        ignored_layers: names of layers whose input and output widths stay fixed.
        seed: seed for the fresh initial weights.
        custom_rules: ``{layer class: rule}`` for this call (see ``plan``).

    Returns:
        A new ``keras.Model`` with redistributed widths, checked against its plan as in ``crop``.

    Raises:
        ValueError: if the target budget cannot be reached with ``max_ratio`` (e.g. ``flops=3`` with
            ``max_ratio=1.5``), if the minimum widths exceed it, or if the two budgets contradict (the
            params cap keeps the MACs below 98% of the ``flops`` target).

    Example:
        >>> same_flops = tf_precrop.preconfig(model, flops=1.0, params=0.8)
    """
    return crop(model, preconfig_plan(model, flops=flops, params=params, max_ratio=max_ratio,
                                      round_to=round_to, ignored_layers=ignored_layers,
                                      custom_rules=custom_rules), seed=seed, custom_rules=custom_rules)


def preconfig_plan(model, *, flops=1.0, params=None, max_ratio: float = DEFAULT_MAX_RATIO, round_to: int = 1,
                   ignored_layers=(), custom_rules=None) -> CropPlan:
    """The plan ``preconfig`` applies, with its reachability checks. Arguments as ``preconfig``."""
    flops = check_ratio("flops", flops, upper=None)
    params = check_ratio("params", params, upper=None)
    p = plan(model, flops=flops, params=params, max_ratio=max_ratio, round_to=round_to,
             ignored_layers=ignored_layers, custom_rules=custom_rules)
    target_name, target, achieved = (("flops", flops, p.macs_ratio) if flops is not None
                                     else ("params", params, p.params_ratio))
    if achieved < PRECONFIG_TOLERANCE * target:
        other = p.params_ratio if target_name == "flops" else p.macs_ratio
        if params is not None and flops is not None and p.params_ratio >= PRECONFIG_TOLERANCE * params:
            raise ValueError(
                f"The budgets contradict: under params={params:g} the largest reachable flops ratio is "
                f"{achieved:.4f}. Received: flops={flops:g}, params={params:g}. Raise params or lower flops."
            )
        raise solver.InfeasibleBudgetError(
            f"{target_name}={target:g} cannot be reached with max_ratio={max_ratio:g}: the widest allowed "
            f"model reaches {achieved:.4f} (other ratio {other:.4f}). Received: {target_name}={target:g}. "
            "Raise max_ratio or lower the budget."
        )
    return p


def _plan_context(model, plan: CropPlan, ignored_layers: tuple, custom_rules: dict) -> tuple:
    """Checks that ``plan`` fits ``model`` and this call; returns the ignored layers to rebuild with.

    A plan with a fingerprint (format_version 2) is compared by it (no graph walk: the rebuilt model is
    checked against the plan anyway); an older plan by walking the model.
    """
    if plan.fingerprint is None:  # format_version 1: the plan does not know its ignored layers
        _check_plan_matches(model, plan, ignored_layers, custom_rules)
        return ignored_layers
    if ignored_layers and sorted(ignored_layers) != sorted(plan.ignored_layers):
        raise ValueError(
            f"The plan was made with ignored_layers={plan.ignored_layers!r}; crop applies the plan's. Received: "
            f"ignored_layers={list(ignored_layers)!r}. Leave ignored_layers out, or make a new plan."
        )
    given = {cls.__name__ for cls in custom_rules}
    missing = sorted(set(plan.custom_rules) - given)
    if missing:
        raise ValueError(
            f"The plan was made with custom_rules for {missing}; rules are code and are not stored in the plan. "
            f"Pass the same custom_rules to crop. Received: custom_rules for {sorted(given)}"
        )
    actual = plan_lib.fingerprint(model)
    if actual != plan.fingerprint:
        raise ValueError(
            f"The plan was made for another model (plan: '{plan.model_name}', model: '{model.name}'): their "
            f"layers, classes or widths differ (fingerprint {plan.fingerprint} vs {actual})."
        )
    return tuple(plan.ignored_layers)


def _check_plan_matches(model, plan: CropPlan, ignored_layers, custom_rules=None):
    graph = ModelGraph(model, ignored_layers=ignored_layers, custom_rules=custom_rules)
    missing = sorted(set(plan.updates) - set(graph.records))
    dense = {path: plan_lib.layout_lib.width(rec.out_layouts[0], graph.groups.dense_width)
             for path, rec in graph.records.items() if rec.out_layouts}
    mismatched = [lp.name for lp in plan.layers if lp.name in dense and dense[lp.name] != lp.dense_width]
    if missing or mismatched or len(plan.layers) != len(graph.records):
        raise ValueError(
            f"The plan was made for another model (plan: '{plan.model_name}', model: '{model.name}'); "
            f"unknown layers: {missing[:5]}, widths that differ: {mismatched[:5]}."
        )
