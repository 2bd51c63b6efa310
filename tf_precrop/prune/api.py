"""``tf_precrop.prune``: structured pruning of a *trained* model that keeps the surviving weights.

Widths come from ``plan()`` (the PreCrop geometric program, ``uniform=True``, or a given ``CropPlan``);
``crop()`` builds the narrower architecture (same layer names); group importance picks which channels of
each group survive; every surviving weight slice is copied from the trained model (docs/method.md,
"Pruning a trained model").
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_precrop import api as api_lib
from tf_precrop.graph import registry
from tf_precrop.graph.walker import ModelGraph
from tf_precrop.plan import CropPlan
from tf_precrop.prune import importance as importance_lib
from tf_precrop.prune import mapping, selection


@dataclasses.dataclass
class GroupImportance:
    """One channel group after pruning.

    Attributes:
        id: group id (as in ``CropPlan.groups``).
        origin: the layer that created the group.
        dense_width, width: channels before and after.
        kept_importance: fraction of the group's importance mass (sum of its channel scores under the
            criterion used) that survives; None when the group's scores sum to 0.
    """

    id: int
    origin: str
    dense_width: int
    width: int
    kept_importance: float | None


@dataclasses.dataclass
class PruneReport:
    """What ``prune`` did: the plan it applied and how much importance each group kept.

    Attributes:
        plan: the applied ``CropPlan``.
        importance: the criterion (name, or the callable's name).
        reduction: ``"sum"`` or ``"mean"``.
        groups: ``GroupImportance`` per group whose width changed.
    """

    plan: CropPlan
    importance: str
    reduction: str
    groups: list

    def summary(self) -> str:
        """The plan table, then the fraction of importance mass kept per pruned group."""
        rows = [(f"g{g.id}", g.origin, f"{g.dense_width} -> {g.width}",
                 "-" if g.kept_importance is None else f"{g.kept_importance:.4f}") for g in self.groups]
        header = ("Group", "Origin", "Width", "Importance kept")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

        def fmt(r):
            return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

        lines = [self.plan.summary(), "",
                 f"Importance kept per pruned group (importance={self.importance}, reduction={self.reduction})",
                 fmt(header), *[fmt(r) for r in rows]]
        return "\n".join(lines)


def prune(model, plan: CropPlan | None = None, *, flops=None, params=None, latency=None, latency_model=None,
          round_to: int = 1, ignored_layers=(), uniform: bool = False, importance="l1",
          reduction: str = "sum", data=None, loss=None, seed: int | None = None, return_report: bool = False,
          custom_rules=None):
    """Prunes a trained model to a budget, keeping the weights of the channels that survive.

    Widths come from the same geometric program as ``crop`` (or one shared ratio with ``uniform=True``, or
    a given ``plan``). Within every channel group, the channels with the highest *group importance*
    survive: a channel is scored over all weights that hold it (each producer's output filter, each
    consumer's input slice, every BN/LN per-channel vector), so residual streams and concatenations lose the
    same indices everywhere. Every surviving weight slice (kernels, biases, BatchNormalization gamma/beta and
    moving statistics, LayerNormalization, depthwise and grouped kernels, Dense rows after Flatten,
    concatenation segments) is copied from ``model``, indices in their original order; layers whose widths
    do not change keep all their weights.

    Args:
        model: a trained Keras 3 functional or Sequential model with a fixed input shape. Not modified.
        plan: a ``CropPlan`` of this model (from ``tf_precrop.plan`` or ``CropPlan.from_json``); when given,
            no budget may be passed.
        flops: MACs (= FLOPs) budget, a ratio in (0, 1] of the dense model's.
        params: params budget, a ratio in (0, 1].
        latency: predicted-latency budget, a ratio in (0, 1]; needs ``latency_model``.
        latency_model: a ``tf_precrop.LatencyModel`` of the target device.
        round_to: new widths are multiples of this.
        ignored_layers: names of layers whose input and output widths (and weights) stay as they are.
        uniform: one shared width ratio for every group instead of the PreCrop allocation.
        importance: ``"l1"`` / ``"l2"`` (sum of |w| / of w² over kernel slices), ``"bn"`` (|gamma| of the
            BatchNormalization/LayerNormalization layers of the group; groups without one use ``"l1"``),
            ``"taylor"`` (first-order Taylor sum over batches of |w · dL/dw| over all trainable slices; needs
            ``data`` and ``loss``; TensorFlow or JAX backend), ``"random"`` (a control, see ``seed``), or a
            callable ``(ChannelGroup) -> scores`` returning one score per channel of the group
            (``tf_precrop.prune.ChannelGroup``).
        reduction: how the slices of a channel combine into its score: ``"sum"`` or ``"mean"``.
        data: ``"taylor"`` only: ``(x, y)`` arrays or an iterable of ``(x, y)`` batches (e.g. a few batches
            of a ``tf.data.Dataset``).
        loss: ``"taylor"`` only: a Keras loss (name or callable ``loss(y_true, y_pred)``).
        seed: seed of ``importance="random"``.
        return_report: also return a ``PruneReport`` (plan summary and importance kept per group).
        custom_rules: ``{layer class: rule}`` for this call, as in ``crop``; a custom rule must subclass one of
            the built-in rules (conv, pass-through, merge...) for its weights to be mapped.

    Returns:
        The pruned ``keras.Model`` (same layer names), or ``(model, PruneReport)`` with ``return_report``.

    Raises:
        TypeError: if ``model`` is not a Keras model or ``plan`` not a ``CropPlan``.
        ValueError: for an unknown ``importance`` or ``reduction``, ``"taylor"`` without ``data``/``loss``
            or on another backend, a plan made for another model, both a plan and budgets, and every
            error of ``tf_precrop.plan``.

    Example:
        >>> trained = keras.saving.load_model("my_model.keras")
        >>> small = tf_precrop.prune(trained, flops=0.5, importance="l1", round_to=8)
        >>> small.compile(...); small.fit(...)  # fine-tune
        >>> small, report = tf_precrop.prune(trained, flops=0.5, uniform=True, return_report=True)
        >>> print(report.summary())
    """
    importance_lib.check_importance(importance, reduction, data, loss)
    ignored_layers = api_lib._check_ignored(ignored_layers)
    custom_rules = registry.resolve_rules(custom_rules)
    if plan is None:
        plan = api_lib.plan(model, flops=flops, params=params, round_to=round_to, ignored_layers=ignored_layers,
                            uniform=uniform, latency=latency, latency_model=latency_model,
                            custom_rules=custom_rules)
        budgets = {}
    else:
        budgets = {"flops": flops, "params": params, "latency": latency}
    # crop checks the plan against the model and builds the narrower architecture (fresh weights).
    pruned = api_lib.crop(model, plan, ignored_layers=ignored_layers, custom_rules=custom_rules, **budgets)
    # The plan's group ids are those of the graph it was made on (a plan may carry its ignored layers).
    ignored_layers = ignored_layers or tuple(getattr(plan, "ignored_layers", None) or ())
    cmap = mapping.ChannelMap(model, ModelGraph(model, ignored_layers=ignored_layers, custom_rules=custom_rules),
                              custom_rules=custom_rules)
    scores = _scores(cmap, plan, importance, reduction, data, loss, seed, model)
    keep = selection.select(cmap, plan, scores)
    _copy_weights(cmap, keep, pruned)
    if not return_report:
        return pruned
    return pruned, _report(cmap, plan, keep, scores, importance, reduction)


def _scores(cmap, plan, importance, reduction, data, loss, seed, model) -> np.ndarray:
    if callable(importance):
        return _custom_scores(cmap, plan, importance)
    if importance == "random":
        return np.random.default_rng(seed).random(cmap.num_classes)
    gradients = importance_lib.taylor_gradients(model, data, loss) if importance == "taylor" else None
    scores, counts = importance_lib.class_scores(cmap, importance, reduction, gradients)
    if importance == "bn":
        # Groups without a normalization layer fall back to kernel magnitudes.
        l1, _ = importance_lib.class_scores(cmap, "l1", reduction)
        roots = selection.class_roots(cmap)
        with_bn = {int(r) for r in roots[counts > 0]}
        fallback = np.array([int(r) not in with_bn for r in roots], dtype=bool)
        scores = np.where(fallback, l1, scores)
    return scores


def _custom_scores(cmap, plan, fn) -> np.ndarray:
    scores = np.zeros(cmap.num_classes)
    roots = selection.class_roots(cmap)
    groups = cmap.graph.groups
    changed = {g.id for g in plan.groups if g.width != g.dense_width}
    for root in sorted(changed):
        classes = np.flatnonzero(roots == root)
        group = importance_lib.ChannelGroup(root, groups.origin(root), len(classes),
                                            importance_lib.group_members(cmap, classes))
        values = np.asarray(fn(group), dtype=np.float64)
        if values.shape != (len(classes),):
            raise ValueError(
                f"The importance callable must return one score per channel of the group: shape "
                f"({len(classes)},) for group {root} (from '{group.origin}'). Received: shape {values.shape}"
            )
        scores[classes] = values
    return scores


def _copy_weights(cmap, keep, pruned) -> None:
    kept_elements = keep[cmap.class_of]
    assigned = set()
    for spec in cmap.weights:
        target = mapping.layer_at(pruned, spec.path).weights[spec.index]
        value = mapping.slice_weight(spec, spec.variable.numpy(),
                                     lambda ids: kept_elements[ids])
        if tuple(value.shape) != tuple(target.shape):
            raise AssertionError(
                f"Weight '{spec.path}/{spec.name}': kept slice has shape {value.shape}, the pruned layer "
                f"{tuple(target.shape)}. Please report this model."
            )
        target.assign(value)
        assigned.add(id(target))
    missed = [w.path for w in pruned.weights if id(w) not in assigned]
    if missed:  # a model with fresh weights where trained ones were expected must not leave the library
        raise AssertionError(f"Weights not copied from the trained model: {missed[:5]}. Please report this model.")


def _report(cmap, plan, keep, scores, importance, reduction) -> PruneReport:
    roots = selection.class_roots(cmap)
    rows = []
    for g in plan.groups:
        if g.width == g.dense_width:
            continue
        mine = roots == g.id
        total = float(scores[mine].sum())
        kept = float(scores[mine & keep].sum())
        rows.append(GroupImportance(g.id, g.origin, g.dense_width, g.width, kept / total if total > 0 else None))
    name = importance if isinstance(importance, str) else getattr(importance, "__name__", "callable")
    return PruneReport(plan, name, reduction, rows)
