"""CropPlan: what a crop or preconfig will do, layer by layer, before any model is built."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json

import keras

from tf_precrop import cost as cost_lib
from tf_precrop import latency_model as latency_model_lib
from tf_precrop.graph import layout as layout_lib
from tf_precrop.graph import registry
from tf_precrop.graph.walker import ModelGraph

#: 2 added ``ignored_layers``, ``custom_rules`` and ``fingerprint``; version 1 plans still load (without them,
#: ``crop`` re-walks the model to check the plan fits and takes ``ignored_layers`` from its caller).
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclasses.dataclass
class GroupPlan:
    """One channel group: every width in it keeps the same ratio to its dense width."""

    id: int
    origin: str  # the layer (or input) whose output created the group's root
    members: list  # layers whose output width is in the group
    dense_width: int
    width: int
    ratio: float | None  # continuous solution c_g; None when the group's width is fixed
    fixed: str | None  # why the width is fixed, else None


@dataclasses.dataclass
class LayerPlan:
    """One layer before -> after. ``density`` is the fraction of its kernel weights kept (p_l)."""

    name: str
    class_name: str
    group: int | None
    dense_width: int
    width: int
    dense_macs: int
    macs: int
    dense_params: int
    params: int
    density: float | None
    sets_width: bool = False  # the layer's config carries its output width (filters / units)
    fixed: bool = False  # ignored or understood only as "keep every width": its cost counts, unchanged


@dataclasses.dataclass
class CropPlan:
    """The widths a crop gives a model, with their cost.

    Attributes:
        model_name: name of the planned model.
        budgets: the requested ratios, ``{"flops": ..., "params": ..., "latency": ...}`` (None when not
            given).
        round_to, max_ratio, uniform: the settings the plan was made with.
        groups: ``GroupPlan`` per channel group.
        layers: ``LayerPlan`` per layer, in graph order.
        updates: layer path -> config fields the rebuild changes (e.g. ``{"filters": 24}``).
        dense_macs, dense_params, macs, params: totals before and after (MACs, FLOPs = 2 x MACs).
        solve_seconds, round_seconds: time in the geometric program and in the integer repair.
        latency_model, dense_latency_ms, latency_ms: the latency model's name and its predicted latency
            before and after, when the plan was made with one (else None).
        ignored_layers: the ``ignored_layers`` the plan was made with (``crop`` reuses them).
        custom_rules: layer class name -> rule class name of the per-call ``custom_rules`` it was made with
            (rules are code: ``crop`` needs the same ``custom_rules`` passed again).
        fingerprint: hash of the model's layer paths, classes, weight shapes and input shapes (see
            ``fingerprint``); ``crop`` compares it instead of re-walking the graph. None in version-1 plans.
    """

    model_name: str
    budgets: dict
    round_to: int
    max_ratio: float
    uniform: bool
    groups: list
    layers: list
    updates: dict
    dense_macs: int
    dense_params: int
    macs: int
    params: int
    solve_seconds: float
    round_seconds: float
    latency_model: str | None = None  # name of the LatencyModel the plan was made or reported with
    dense_latency_ms: float | None = None  # its predicted latencies (None without a latency model)
    latency_ms: float | None = None
    ignored_layers: list = dataclasses.field(default_factory=list)
    custom_rules: dict = dataclasses.field(default_factory=dict)
    fingerprint: str | None = None

    @property
    def latency_ratio(self) -> float | None:
        """Predicted latency ratio to the dense model (None when planned without a latency model)."""
        if self.latency_ms is None or not self.dense_latency_ms:
            return None
        return self.latency_ms / self.dense_latency_ms

    @property
    def macs_ratio(self) -> float:
        """Achieved MACs (= FLOPs) ratio to the dense model."""
        return self.macs / self.dense_macs if self.dense_macs else 1.0

    flops_ratio = macs_ratio

    @property
    def params_ratio(self) -> float:
        return self.params / self.dense_params if self.dense_params else 1.0

    @property
    def widths(self) -> dict:
        """Layer path -> new output width, for the layers whose config carries a width."""
        return {lp.name: lp.width for lp in self.layers if lp.sets_width}

    def layer(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"No layer named {name!r} in this plan.")

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["format_version"] = FORMAT_VERSION
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "CropPlan":
        """Reads a plan written by ``to_json``.

        Raises:
            ValueError: if the text is not a tf_precrop plan of a known format.
        """
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"Not a JSON plan: {err}") from err
        version = data.pop("format_version", None) if isinstance(data, dict) else None
        if version not in _READABLE_VERSIONS:
            raise ValueError(
                f"Unsupported plan format_version. Expected one of {list(_READABLE_VERSIONS)}, received: {version!r}"
            )
        try:
            data["groups"] = [GroupPlan(**g) for g in data["groups"]]
            data["layers"] = [LayerPlan(**row) for row in data["layers"]]
            return cls(**data)
        except (KeyError, TypeError) as err:
            raise ValueError(f"Malformed plan (format_version {version}): {err!r}") from err

    def summary(self, *, all_layers: bool = False) -> str:
        """A ``model.summary()``-like table: widths before -> after, MACs and params per layer.

        Args:
            all_layers: include layers without MACs, params or a width of their own.
        """
        rows = []
        for lp in self.layers:
            if not all_layers and not (lp.dense_macs or lp.dense_params or lp.name in self.updates):
                continue
            mark = "▲" if lp.width > lp.dense_width else ("▼" if lp.width < lp.dense_width else " ")
            rows.append((
                f"{lp.name} ({lp.class_name}{', fixed' if lp.fixed else ''})",
                "-" if lp.group is None else f"g{lp.group}",
                f"{lp.dense_width} -> {lp.width} {mark}",
                f"{lp.dense_macs:,} -> {lp.macs:,}",
                f"{lp.dense_params:,} -> {lp.params:,}",
            ))
        header = ("Layer (type)", "Group", "Width", "MACs", "Params")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

        def fmt(r):
            return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

        bar = "=" * len(fmt(header))
        budgets = ", ".join(f"{k}={v:g}" for k, v in self.budgets.items() if v is not None)
        free = sum(1 for g in self.groups if g.fixed is None)
        lines = [f'Plan for "{self.model_name}" ({budgets}; round_to={self.round_to}, '
                 f"max_ratio={self.max_ratio:g}{', uniform' if self.uniform else ''})",
                 bar, fmt(header), bar, *[fmt(r) for r in rows], bar,
                 f"MACs:   dense {self.dense_macs:,} -> cropped {self.macs:,} (ratio {self.macs_ratio:.4f})",
                 f"FLOPs:  dense {2 * self.dense_macs:,} -> cropped {2 * self.macs:,} (FLOPs = 2 x MACs)",
                 f"Params: dense {self.dense_params:,} -> cropped {self.params:,} (ratio {self.params_ratio:.4f})",
                 *([] if self.latency_ratio is None else [
                     f"Latency (predicted by {self.latency_model or 'the latency model'}): "
                     f"{self.dense_latency_ms:.3f} ms -> {self.latency_ms:.3f} ms (ratio {self.latency_ratio:.4f})"]),
                 f"Groups: {len(self.groups)} ({free} free, {len(self.groups) - free} fixed); "
                 f"solve {self.solve_seconds:.3f} s, rounding {self.round_seconds:.3f} s"]
        return "\n".join(lines)


def fingerprint(model) -> str:
    """A short hash of what a plan depends on: input shapes, and every layer's path, class and weight shapes
    (nested models included), which hold the dense widths. Cheap: no graph walk.

    ``crop(model, plan)`` compares it with the plan's. The wiring itself is not hashed: a model with the same
    layers wired differently is caught by the check of the rebuilt model against its plan (tf_precrop.verify).
    """
    parts = [[list(t.shape) for t in model.inputs]]

    def visit(m, prefix):
        for layer in m.layers:
            path = prefix + layer.name
            if isinstance(layer, keras.Model):
                parts.append([path, type(layer).__name__])
                visit(layer, path + "/")
            else:
                parts.append([path, type(layer).__name__, [list(w.shape) for w in layer.weights]])

    visit(model, "")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def make_plan(graph: ModelGraph, solution, *, budgets: dict, round_to: int, max_ratio: float,
              uniform: bool, latency_model=None, ignored_layers=(), custom_rules=None) -> CropPlan:
    """Turns solver widths into a CropPlan (costs from the one counter, config updates from the rules)."""
    groups = graph.groups

    def group_width(gid):
        root, factor = groups.find(gid)
        width = factor * solution.widths[root]
        if width.denominator != 1:
            raise AssertionError(f"group {gid} got a non-integral width {width}")
        return int(width)

    def ratio_of_root(root):
        return solution.widths[root] / groups.dense_width(root)

    dense_costs = {lc.name: lc for lc in cost_lib.layer_costs(graph)}
    new_costs = {lc.name: lc for lc in cost_lib.layer_costs(graph, ratio_of_root)}
    kernel_density = _kernel_density(graph, ratio_of_root)

    members: dict = {}
    layers, updates = [], {}
    for path, rec in graph.records.items():
        out = rec.out_layouts[0] if rec.out_layouts else ()
        root = groups.root(out[0].group) if len(out) == 1 else None
        if rec.produced is not None:
            members.setdefault(groups.root(rec.produced), []).append(path)
        dense_w = layout_lib.width(out, groups.dense_width) if out else 0
        new_w = layout_lib.width(out, group_width) if out else 0
        dc, nc = dense_costs[path], new_costs[path]
        layers.append(LayerPlan(path, type(rec.layer).__name__, root, dense_w, new_w, dc.macs, nc.macs,
                                dc.params, nc.params, kernel_density.get(path), rec.produced is not None,
                                graph.is_fixed(rec)))
        update = _config_update(rec, group_width)
        if update:
            updates[path] = update

    group_rows = []
    for root in groups.roots():
        group_rows.append(GroupPlan(
            id=root,
            origin=groups.origin(root),
            members=members.get(root, []),
            dense_width=groups.dense_width(root),
            width=solution.widths[root],
            ratio=solution.continuous.get(root),
            fixed=solution.fixed_reasons.get(root),
        ))
    return CropPlan(
        model_name=graph.model.name,
        budgets={"flops": budgets.get(registry.MACS), "params": budgets.get(registry.PARAMS),
                 "latency": budgets.get(latency_model_lib.LATENCY)},
        round_to=round_to,
        max_ratio=max_ratio,
        uniform=uniform,
        groups=group_rows,
        layers=layers,
        updates=updates,
        dense_macs=sum(lc.macs for lc in dense_costs.values()),
        dense_params=sum(lc.params for lc in dense_costs.values()),
        macs=sum(lc.macs for lc in new_costs.values()),
        params=sum(lc.params for lc in new_costs.values()),
        solve_seconds=solution.solve_seconds,
        round_seconds=solution.round_seconds,
        **_predicted_latency(graph, latency_model, ratio_of_root),
        ignored_layers=list(ignored_layers),
        custom_rules={cls.__name__: type(rule).__name__ for cls, rule in (custom_rules or {}).items()},
        fingerprint=fingerprint(graph.model),
    )


def _predicted_latency(graph, latency_model, ratio_of_root) -> dict:
    if latency_model is None:
        return {}
    return {
        "latency_model": latency_model.name,
        "dense_latency_ms": latency_model.predict_ms(latency_model_lib.graph_features(graph)),
        "latency_ms": latency_model.predict_ms(latency_model_lib.graph_features(graph, ratio_of_root)),
    }


def _kernel_density(graph, ratio_of_root) -> dict:
    kept, dense = {}, {}
    for term in graph.terms:
        if term.kind == registry.PARAMS and term.kernel:
            kept[term.layer] = kept.get(term.layer, 0.0) + cost_lib.term_value(graph, term, ratio_of_root)
            dense[term.layer] = dense.get(term.layer, 0.0) + term.dense
    return {name: kept[name] / dense[name] for name in kept if dense[name]}


def _config_update(record, group_width) -> dict:
    """The config fields the rule rewrites for the new widths (empty when nothing changes)."""
    layer = record.layer
    # Stateless ops (``a + b``) have no config; rules that never rewrite need no look.
    if not isinstance(layer, keras.layers.Layer) or type(record.rule).rewrite is registry.Rule.rewrite:
        return {}
    config = layer.get_config()
    widths = registry.Widths(
        [layout_lib.width(lay, group_width) for lay in record.in_layouts],
        [layout_lib.width(lay, group_width) for lay in record.out_layouts],
        group_width(record.produced) if record.produced is not None else None,
        {name: layout_lib.width(lay, group_width) for name, lay in record.inner.items()},
    )
    new = record.rule.rewrite(copy.deepcopy(config), widths)
    return {k: v for k, v in new.items() if config.get(k) != v}
