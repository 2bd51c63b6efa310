"""The guarantee: a rebuilt model is checked against its plan before it leaves the library.

``crop`` and ``preconfig`` call ``check_model_matches_plan`` on every model they return. It re-walks the new
model with the one counter (``tf_precrop.cost``), with the same ignored layers and custom rules as the plan,
and compares each layer's MACs and params with the plan's; then ``count_params()`` with the planned total
(docs/method.md, "The guarantee").
"""

from __future__ import annotations

from tf_precrop import cost as cost_lib
from tf_precrop.graph.walker import ModelGraph


class PlanMismatchError(RuntimeError):
    """The rebuilt model differs from its plan. This is a tf_precrop bug: the model is not returned."""


def check_model_matches_plan(new_model, plan, *, ignored_layers=(), custom_rules=None) -> None:
    """Raises unless ``new_model`` has, layer by layer, the MACs and params ``plan`` predicts.

    Args:
        new_model: the rebuilt Keras model.
        plan: the ``CropPlan`` it was built from.
        ignored_layers: the ignored layers the plan was made with.
        custom_rules: the per-call rules the plan was made with (``{layer class: Rule}``).

    Raises:
        PlanMismatchError: naming the first layer (in graph order) whose MACs or params differ from the
            plan, or the totals when ``count_params()`` differs.

    Example:
        >>> small = tf_precrop.rebuild.rebuild(model, plan.updates)
        >>> check_model_matches_plan(small, plan)  # silent when the model is right
    """
    graph = ModelGraph(new_model, ignored_layers=ignored_layers, custom_rules=custom_rules)
    actual = {lc.name: lc for lc in cost_lib.layer_costs(graph)}
    for lp in plan.layers:
        lc = actual.pop(lp.name, None)
        if lc is None:
            raise PlanMismatchError(
                f"The rebuilt model differs from its plan: layer '{lp.name}' ({lp.class_name}) is missing. "
                "This is a tf_precrop bug; please report it with the model."
            )
        if (lc.macs, lc.params) != (lp.macs, lp.params):
            raise PlanMismatchError(
                f"The rebuilt model differs from its plan at layer '{lp.name}' ({lp.class_name}): planned "
                f"{lp.macs:,} MACs and {lp.params:,} params, rebuilt {lc.macs:,} MACs and {lc.params:,} params. "
                "This is a tf_precrop bug; please report it with the model."
            )
    if actual:
        name = next(iter(actual))
        raise PlanMismatchError(
            f"The rebuilt model differs from its plan: layer '{name}' is not in the plan. "
            "This is a tf_precrop bug; please report it with the model."
        )
    params = new_model.count_params()
    if params != plan.params:
        raise PlanMismatchError(
            f"The rebuilt model differs from its plan: count_params() is {params:,}, planned {plan.params:,}. "
            "This is a tf_precrop bug; please report it with the model."
        )
