"""Fitting a ``LatencyModel`` to measured latencies, and the randomly narrowed models to measure.

This is the backend-agnostic half of calibration (docs/latency_model.md): which variants of a model to
time (``random_plans``) and how the four rates follow from their timings (``fit_rates``, ``calibration``).
Exporting and timing the variants needs TensorFlow and LiteRT and lives in ``tf_precrop.export.calibrate``.

Why the fit needs care: every narrowed variant of one model has the same number of kernel ops, so the
``ops`` feature is constant over a calibration set: an intercept. When the timings barely vary (a tiny model,
a noisy machine), non-negative least squares may explain them by that intercept alone, which would predict
the same latency at every width, a model no latency budget can use (and ``LatencyModel`` rejects it). The
fit then drops the columns that are constant over the set and fits the width-dependent rates alone.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from tf_precrop import api
from tf_precrop import latency_model as latency_model_lib
from tf_precrop import solver
from tf_precrop.graph.walker import ModelGraph
from tf_precrop.plan import make_plan  # (`tf_precrop.plan` the attribute is the function)

FEATURES = latency_model_lib.FEATURES
#: The features whose rate makes latency depend on the widths (all but the per-op constant).
WIDTH_FEATURES = ("macs", "depthwise_macs", "elements")
#: A fit whose width-dependent rates explain less than this fraction of every measured latency counts as
#: explaining the timings by the per-op constant alone.
_MIN_WIDTH_SHARE = 1e-3


class LatencyFitError(ValueError):
    """The measurements cannot determine a latency model (e.g. every width-dependent feature is zero)."""


@dataclasses.dataclass
class Calibration:
    """A fitted latency model and the measurements behind it.

    Attributes:
        latency_model: the fitted ``LatencyModel``.
        rows: one dict per measured variant (the dense model first): ``name``, the latency features,
            ``macs_ratio``, ``p50_ms``, ``predicted_ms`` and ``relative_error`` (predicted / measured - 1).
    """

    latency_model: latency_model_lib.LatencyModel
    rows: list

    @property
    def max_relative_error(self) -> float:
        """Largest |predicted / measured - 1| over the calibration variants."""
        return max(abs(r["relative_error"]) for r in self.rows)


def random_plans(model, samples: int, *, low: float = 0.25, round_to: int = 8, seed: int = 0) -> list:
    """Randomly narrowed plans of a model: the calibration set.

    Each sample draws one overall ratio in ``[low, 1]`` and scatters every free group around it (a factor
    in [0.6, 1.4]), so the set spans both overall size and how width is spread across layers.

    Args:
        model: a Keras 3 functional or Sequential model with a fixed input shape.
        samples: number of plans.
        low: smallest overall ratio.
        round_to: widths are multiples of this (as in ``tf_precrop.crop``).
        seed: seed of the draw.

    Returns:
        A list of ``CropPlan`` (budgets None), applicable with ``tf_precrop.crop(model, plan)``.

    Raises:
        ValueError: on ``samples < 1``, ``low`` outside (0, 1] or ``round_to`` not a positive integer.

    Example:
        >>> plans = random_plans(model, 8, round_to=8)
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"`samples` must be a positive integer. Received: samples={samples!r}")
    low = api.check_ratio("low", low)
    graph = ModelGraph(model)
    problem = solver.Problem(graph, round_to=api.check_round_to(round_to))
    rng = np.random.default_rng(seed)
    plans = []
    for _ in range(samples):
        ratios = np.clip(rng.uniform(low, 1.0) * rng.uniform(0.6, 1.4, len(problem.roots)), 0.0, 1.0)
        widths = {root: graph.groups.dense_width(root) for root in graph.groups.roots()}
        for root, allowed, dense, ratio in zip(problem.roots, problem.allowed, problem.dense, ratios):
            widths[root] = int(allowed[int(np.argmin(np.abs(allowed - ratio * dense)))])
        solution = solver.Solution(widths=widths, continuous={}, fixed_reasons=dict(problem.fixed_reasons),
                                   solve_seconds=0.0, round_seconds=0.0)
        plans.append(make_plan(graph, solution, budgets={}, round_to=round_to, max_ratio=1.0, uniform=False))
    return plans


def _nnls_relative(x: np.ndarray, y: np.ndarray, columns) -> np.ndarray:
    """Non-negative rates of ``columns`` minimising the relative error of ``x @ rates`` to ``y``."""
    from scipy import optimize  # pylint: disable=g-import-not-at-top

    rates = np.zeros(x.shape[1])
    if not columns:
        return rates
    sub = x[:, columns]
    # Relative error: divide each row by its latency; scale columns so nnls is well conditioned.
    scale = np.maximum(np.abs(sub).max(axis=0), 1e-30)
    fitted, _ = optimize.nnls((sub / scale) / y[:, None], np.ones(len(y)))
    rates[columns] = fitted / scale
    return rates


def fit_rates(feature_rows, latencies_ms) -> np.ndarray:
    """The four rates (ns per unit of each of ``FEATURES``) that best explain measured latencies.

    Non-negative least squares on the relative error. If that explains the timings by the per-op constant
    alone (the width-dependent rates explain < 0.1 % of every latency: the timings do not vary with width),
    the columns that are constant over the measurements are dropped and the width-dependent rates fitted alone, with a
    ``RuntimeWarning``: a latency model that ignores the widths cannot drive a latency budget.

    Args:
        feature_rows: ``tf_precrop.latency_model.features`` dicts, one per measured model.
        latencies_ms: the measured latencies (e.g. p50) in ms, same order.

    Returns:
        A float array of ``len(FEATURES)`` non-negative rates in ns, at least one width-dependent one positive.

    Raises:
        ValueError: with fewer than 4 measurements, a non-positive latency, or non-finite features.
        LatencyFitError: if every width-dependent feature is zero in every row (nothing to fit a width to).

    Example:
        >>> fit_rates([features(a), features(b), features(c), features(d)], [4.6, 2.9, 2.1, 1.2])
    """
    y = np.asarray(latencies_ms, float) * 1e6
    if len(feature_rows) != len(y) or len(y) < len(FEATURES):
        raise ValueError(f"Fitting needs at least {len(FEATURES)} measured models, one latency each. "
                         f"Received: {len(feature_rows)} feature rows and {len(y)} latencies")
    if not np.all(y > 0):
        raise ValueError(f"Latencies must be > 0. Received: latencies_ms={list(latencies_ms)}")
    x = np.array([[row[name] for name in FEATURES] for row in feature_rows], float)
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"Latency features must be finite and >= 0. Received: {x.tolist()}")
    width = [FEATURES.index(name) for name in WIDTH_FEATURES if np.any(x[:, FEATURES.index(name)] > 0)]
    if not width:
        raise LatencyFitError(f"Cannot fit a latency model: the features {', '.join(WIDTH_FEATURES)} are 0 in "
                              "every measured model (no kernel op whose cost depends on a width).")
    rates = _nnls_relative(x, y, [i for i in range(len(FEATURES)) if np.any(x[:, i] > 0)])
    # Width-dependent share of each predicted latency; below _MIN_WIDTH_SHARE the fit is the intercept alone
    # (NNLS leaves rounding residue such as 1e-15 ns per MAC in the columns it does not use).
    if np.max(x[:, width] @ rates[width] / y) > _MIN_WIDTH_SHARE:
        return rates
    constant = [FEATURES[i] for i in range(len(FEATURES)) if np.ptp(x[:, i]) <= 1e-12 * np.abs(x[:, i]).max()]
    warnings.warn(
        "The measured latencies are explained by the per-op constant alone (they barely vary with width: "
        f"{np.round(y * 1e-6, 4).tolist()} ms), which would predict the same latency at every width. Fitted "
        f"without the features constant over the measurements ({', '.join(constant)}); measure more runs, "
        "more variants or a lower `low` for a better model.", RuntimeWarning, stacklevel=2)
    varying = [i for i in width if FEATURES[i] not in constant] or width
    return _nnls_relative(x, y, varying)


def calibration(rows, latencies_ms, *, name: str = "") -> Calibration:
    """Fits a latency model to measurements and reports its error on each of them.

    Args:
        rows: one dict per measured model holding its ``features`` (other fields, e.g. ``name``, are copied
            into ``Calibration.rows``).
        latencies_ms: measured latencies (p50) in ms, same order.
        name: the latency model's name.

    Returns:
        A ``Calibration``.

    Raises:
        ValueError, LatencyFitError: as ``fit_rates``.

    Example:
        >>> cal = calibration([{"name": "dense", **features(model)}, ...], [4.6, 2.9, 2.1, 1.2], name="x86")
    """
    fitted = latency_model_lib.LatencyModel(*(float(r) for r in fit_rates(rows, latencies_ms)), name=name)
    out = []
    for row, measured in zip(rows, latencies_ms):
        predicted = fitted.predict_ms({k: row[k] for k in FEATURES})
        out.append({**row, "p50_ms": measured, "predicted_ms": predicted, "relative_error": predicted / measured - 1})
    return Calibration(fitted, out)
