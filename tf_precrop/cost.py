"""MACs and params per layer, as functions of the channel-group width ratios.

This is the one counter of the project: budgets, plans, reports, the sparsity baselines and the benchmarks
all read it. Conventions:

* MACs are the multiply-accumulates of conv, depthwise, separable, transposed-conv and dense kernels
  (bias, BN, activations, adds and pooling are not MACs). FLOPs = 2 x MACs.
* Params are everything ``model.count_params()`` counts (bias, BN statistics, LayerScale... included).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict

import numpy as np

from tf_precrop.graph import registry
from tf_precrop.graph.walker import ModelGraph


@dataclasses.dataclass(frozen=True)
class KernelCost:
    """A prunable kernel: its number of weights and the MACs it performs (per forward pass, batch 1)."""

    weights: int
    macs: int


@dataclasses.dataclass
class LayerCost:
    """MACs and params of one layer (summed over its calls for MACs)."""

    name: str
    class_name: str
    macs: int = 0
    params: int = 0
    kernels: dict = dataclasses.field(default_factory=dict)

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclasses.dataclass
class CostReport:
    """Per-layer and total cost of a model. ``flops == 2 * macs``."""

    layers: list

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def layer(self, name: str) -> LayerCost:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"No layer named {name!r} in this report.")

    def summary(self) -> str:
        """A table of every layer with MACs or params, and the totals."""
        rows = [(lc.name, lc.class_name, f"{lc.macs:,}", f"{lc.params:,}") for lc in self.layers
                if lc.macs or lc.params]
        rows.append(("Total", "", f"{self.macs:,}", f"{self.params:,}"))
        header = ("Layer", "Class", "MACs", "Params")
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]

        def line(r):
            return "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

        rule = "-" * len(line(header))
        body = [line(r) for r in rows[:-1]]
        return "\n".join([line(header), rule, *body, rule, line(rows[-1]),
                          f"FLOPs = 2 x MACs = {self.flops:,}"])


def layout_ratio(graph: ModelGraph, layout, ratio_of_root) -> float:
    """New width / dense width of a layout, given each root group's ratio."""
    total, scaled = 0.0, 0.0
    for seg in layout:
        dense = float(seg.mult * graph.groups.dense_width(seg.group))
        total += dense
        scaled += dense * ratio_of_root(graph.groups.root(seg.group))
    return scaled / total if total else 1.0


def term_value(graph: ModelGraph, term: registry.Term, ratio_of_root=None) -> float:
    if ratio_of_root is None:
        return float(term.dense)
    value = float(term.dense)
    for factor in term.factors:
        value *= layout_ratio(graph, factor, ratio_of_root)
    return value


def layer_costs(graph: ModelGraph, ratio_of_root=None) -> list:
    """Every layer's cost, dense (``ratio_of_root=None``) or at the given root ratios."""
    costs = {path: LayerCost(path, type(rec.layer).__name__) for path, rec in graph.records.items()}
    kernel_parts = defaultdict(lambda: [0.0, 0.0])
    sums = defaultdict(lambda: [0.0, 0.0])
    for term in graph.terms:
        if term.kind not in (registry.MACS, registry.PARAMS):
            continue
        value = term_value(graph, term, ratio_of_root)
        slot = 0 if term.kind == registry.MACS else 1
        sums[term.layer][slot] += value
        if term.kernel:
            # kernel_parts holds (weights, macs): a params term gives weights, a MACs term gives MACs.
            kernel_parts[(term.layer, term.kernel)][1 if term.kind == registry.MACS else 0] += value
    for path, (macs, params) in sums.items():
        costs[path].macs, costs[path].params = int(round(macs)), int(round(params))
    for (path, kernel), (weights, macs) in kernel_parts.items():
        costs[path].kernels[kernel] = KernelCost(int(round(weights)), int(round(macs)))
    return list(costs.values())


def count(model, *, ignored_layers=(), custom_rules=None) -> CostReport:
    """Counts MACs and params per layer.

    Args:
        model: a Keras 3 functional or Sequential model with a fixed input shape (nested models allowed).
        ignored_layers: names of layers tf_precrop does not know (e.g. ``Lambda``) to accept as they are.
        custom_rules: ``{layer class: rule}`` for this call (a rule name or ``tf_precrop.Rule``), consulted
            before the global registry.

    Returns:
        A ``CostReport``: ``.layers`` (``LayerCost`` with ``name``, ``class_name``, ``macs``, ``params``,
        ``kernels``), and totals ``.macs``, ``.params``, ``.flops`` (= 2 x MACs).

    Raises:
        TypeError: if ``model`` is not a Keras model.
        ValueError: for subclassed models, unknown layers, or unknown input dimensions.

    Example:
        >>> report = tf_precrop.count(keras.applications.MobileNetV2(weights=None))
        >>> report.macs, report.params
        (300774272, 3538984)
    """
    return CostReport(layer_costs(ModelGraph(model, ignored_layers=ignored_layers, custom_rules=custom_rules)))


@dataclasses.dataclass
class Posynomial:
    """``sum_t coef[t] * prod_j c[j] ** exponents[t, j]`` over the free roots ``c`` (a sparse COO matrix)."""

    coef: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    powers: np.ndarray
    num_vars: int

    def terms(self, log_ratios: np.ndarray) -> np.ndarray:
        """Value of every monomial at ``c = exp(log_ratios)``."""
        logs = np.zeros(len(self.coef))
        np.add.at(logs, self.rows, self.powers * log_ratios[self.cols])
        return self.coef * np.exp(logs)

    def value(self, log_ratios: np.ndarray) -> float:
        return float(self.terms(log_ratios).sum())

    def dense_matrix(self) -> np.ndarray:
        exps = np.zeros((len(self.coef), self.num_vars))
        np.add.at(exps, (self.rows, self.cols), self.powers)
        return exps


def posynomial(graph: ModelGraph, kind: str, variables: dict) -> Posynomial:
    """Expands the cost of ``kind`` into monomials of the free root ratios.

    Args:
        graph: the model graph.
        kind: ``"macs"`` or ``"params"`` (or ``"activations"``, ``"ops"``).
        variables: root group id -> variable index; roots not in it keep ratio 1.
    """
    return weighted_posynomial(graph, variables, lambda term: float(term.kind == kind))


def weighted_posynomial(graph: ModelGraph, variables: dict, weigh) -> Posynomial:
    """Expands ``sum_t weigh(t) * t`` over the graph's cost terms into monomials of the free root ratios.

    Args:
        graph: the model graph.
        variables: root group id -> variable index; roots not in it keep ratio 1.
        weigh: ``Term -> float``, the weight of each term (0 leaves it out), e.g. ns per MAC.
    """
    merged: dict = defaultdict(float)  # exponent key -> coefficient
    for term in graph.terms:
        scale = weigh(term)
        if not scale:
            continue
        expanded = [_layout_monomials(graph, f, variables) for f in term.factors]
        for combo in itertools.product(*expanded):
            coef = float(term.dense) * scale
            powers: dict = defaultdict(int)
            for weight, var in combo:
                coef *= weight
                if var is not None:
                    powers[var] += 1
            merged[tuple(sorted(powers.items()))] += coef
    coef, rows, cols, pw = [], [], [], []
    for t, (key, c) in enumerate(merged.items()):
        coef.append(c)
        for var, p in key:
            rows.append(t)
            cols.append(var)
            pw.append(p)
    return Posynomial(np.array(coef, float), np.array(rows, int), np.array(cols, int),
                      np.array(pw, float), len(set(variables.values())))


def _layout_monomials(graph, layout, variables):
    """``ratio(layout) = sum_s w_s c_root(s)`` as (w_s, variable or None) pairs, merged per variable."""
    total = float(sum(seg.mult * graph.groups.dense_width(seg.group) for seg in layout))
    weights: dict = defaultdict(float)
    for seg in layout:
        var = variables.get(graph.groups.root(seg.group))
        weights[var] += float(seg.mult * graph.groups.dense_width(seg.group)) / total
    return list((w, var) for var, w in weights.items())


def objective_weights(graph: ModelGraph, variables: dict) -> np.ndarray:
    """Coefficients ``a`` of ``sum_l log p_l = a . log c`` (kernel-weight terms, one per kernel).

    A layer fed by a Concatenate sees the weighted *geometric* mean of its segments' ratios: a lower bound of
    the arithmetic mean (AM-GM) that keeps the problem a geometric program (docs/method.md § The program).
    """
    a = np.zeros(len(set(variables.values())))
    for term in graph.terms:
        if term.kind != registry.PARAMS or not term.kernel:
            continue
        for factor in term.factors:
            for weight, var in _layout_monomials(graph, factor, variables):
                if var is not None:
                    a[var] += weight
    return a
