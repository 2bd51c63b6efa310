"""A linear latency model of a CNN's inference, as a posynomial of the channel-group ratios.

MACs are a poor proxy for batch-1 latency on CPUs: a 1x1 conv with 8 input channels, or a depthwise conv,
moves as many bytes per MAC as it computes, so a plan that thins the bottlenecks of an inverted-residual
net and keeps its expansions wide saves MACs but little time. The model charges each kernel op (conv,
depthwise, dense...) for

* its MACs, at one rate for regular kernels and another for depthwise kernels;
* the elements of every tensor it reads or writes (batch norm and activations fold into the op on export);
* a constant per op.

Every feature is a sum of monomials of the width ratios, so a latency budget keeps the PreCrop program a
geometric program: ``tf_precrop.plan(model, latency=0.5, latency_model=m)``. The four rates are fitted
(non-negative least squares) to measured latencies of a few models, e.g. randomly narrowed copies of the
model to crop (``tf_precrop.export.calibrate_latency``; the fit is in ``tf_precrop.latency_fit``).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from tf_precrop import cost as cost_lib
from tf_precrop.graph import registry
from tf_precrop.graph.walker import ModelGraph

#: Budget kind of a latency budget in the solver (``budgets={"latency": ratio}``).
LATENCY = "latency"
#: Feature names, in the order of ``LatencyModel.rates``.
FEATURES = ("macs", "depthwise_macs", "elements", "ops")


def feature_of(term: registry.Term) -> str | None:
    """Which latency feature a cost term adds to (None for params)."""
    if term.kind == registry.MACS:
        # A kernel whose MACs scale with one width only is channel-wise: depthwise (or the depthwise half
        # of a separable conv). Regular kernels scale with input x output width.
        return "depthwise_macs" if len(term.factors) == 1 else "macs"
    if term.kind == registry.ACTIVATIONS:
        return "elements"
    if term.kind == registry.OPS:
        return "ops"
    return None


def features(model, *, ignored_layers=()) -> dict:
    """The latency features of a model: regular MACs, depthwise MACs, tensor elements moved, kernel ops.

    Args:
        model: a Keras 3 functional or Sequential model with a fixed input shape.
        ignored_layers: as in ``tf_precrop.count``.

    Returns:
        ``{"macs": ..., "depthwise_macs": ..., "elements": ..., "ops": ...}`` (batch 1); ``macs +
        depthwise_macs`` equals ``tf_precrop.count(model).macs``.

    Raises:
        ValueError: as ``tf_precrop.count``.

    Example:
        >>> tf_precrop.latency_model.features(keras.applications.MobileNetV2(weights=None))["depthwise_macs"]
        7599872
    """
    return graph_features(ModelGraph(model, ignored_layers=ignored_layers))


def graph_features(graph: ModelGraph, ratio_of_root=None) -> dict:
    """``features`` of a walked graph, dense or at the given root ratios."""
    totals = dict.fromkeys(FEATURES, 0.0)
    for term in graph.terms:
        name = feature_of(term)
        if name is not None:
            totals[name] += cost_lib.term_value(graph, term, ratio_of_root)
    return totals


@dataclasses.dataclass(frozen=True)
class LatencyModel:
    """Predicted latency in ns: ``rates . features`` (see ``FEATURES``).

    Attributes:
        ns_per_mac: ns per regular (conv, pointwise, dense) multiply-accumulate.
        ns_per_depthwise_mac: ns per depthwise multiply-accumulate.
        ns_per_element: ns per tensor element a kernel op reads or writes.
        ns_per_op: ns per kernel op (dispatch, padding, small ops between kernels).
        name: where the rates come from (device, runtime, threads).
    """

    ns_per_mac: float
    ns_per_depthwise_mac: float
    ns_per_element: float
    ns_per_op: float
    name: str = ""

    def __post_init__(self):
        for field, value in zip(FEATURES, self.rates):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"Latency rates must be finite and >= 0. Received: {field} rate {value!r}")
        if not any(self.rates[:3]):
            raise ValueError("A latency model needs a positive rate for MACs or elements. Received: "
                             f"{self!r}")

    @property
    def rates(self) -> tuple:
        return (self.ns_per_mac, self.ns_per_depthwise_mac, self.ns_per_element, self.ns_per_op)

    def weigh(self, term: registry.Term) -> float:
        """ns per unit of a cost term (0 for params)."""
        name = feature_of(term)
        return 0.0 if name is None else self.rates[FEATURES.index(name)]

    def predict_ms(self, model_or_features, *, ignored_layers=()) -> float:
        """Predicted latency in ms of a Keras model (or of a ``features`` dict).

        Example:
            >>> m.predict_ms(keras.applications.MobileNetV2(weights=None))
        """
        feats = model_or_features
        if not isinstance(feats, dict):
            feats = features(model_or_features, ignored_layers=ignored_layers)
        return float(np.dot(self.rates, [feats[name] for name in FEATURES])) * 1e-6

    def posynomial(self, graph: ModelGraph, variables: dict) -> cost_lib.Posynomial:
        """The predicted latency (ns) as a posynomial of the free root ratios (for the solver)."""
        return cost_lib.weighted_posynomial(graph, variables, self.weigh)

    @classmethod
    def fit(cls, feature_rows, latencies_ms, *, name: str = "") -> "LatencyModel":
        """Fits the rates to measured latencies by non-negative least squares on relative error.

        See ``tf_precrop.latency_fit.fit_rates``: when the timings are explained by the per-op constant
        alone, the constant features are dropped (with a RuntimeWarning) so the model depends on width.

        Args:
            feature_rows: ``features`` dicts, one per measured model.
            latencies_ms: the measured latencies (e.g. p50) in ms, same order.
            name: recorded in the model.

        Returns:
            A ``LatencyModel``.

        Raises:
            ValueError: with fewer than 4 measurements or a non-positive latency.
            tf_precrop.latency_fit.LatencyFitError: if no width-dependent feature is ever non-zero.

        Example:
            >>> m = LatencyModel.fit([features(a), features(b), ...], [4.6, 2.9, ...], name="x86, 1 thread")
        """
        # latency_fit imports this module: import it on use.
        from tf_precrop import latency_fit  # pylint: disable=g-import-not-at-top

        return cls(*(float(r) for r in latency_fit.fit_rates(feature_rows, latencies_ms)), name=name)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "LatencyModel":
        """Reads ``to_json`` output.

        Raises:
            ValueError: if the text is not a latency model.
        """
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"Not a tf_precrop latency model: {err}") from err
