"""Exports and times the calibration set of a ``tf_precrop.LatencyModel`` with LiteRT on this device.

NetAdapt-style: the model to crop is narrowed at random (each channel group to its own width,
``tf_precrop.latency_fit.random_plans``), every variant is exported and timed alternately with the dense
model, and the four rates of the latency model are fitted to the measured p50 latencies
(``tf_precrop.latency_fit.calibration``). The fitted model then drives
``tf_precrop.crop(model, latency=..., latency_model=...)``. Measure on the device you deploy to: the rates
of an x86 server say little about a phone (for Android, time the same files with
``tf_precrop.export.run_on_device`` and call ``tf_precrop.latency_fit.calibration``).

This module only exports and times; the fitting is backend-agnostic and lives in the core
(tf_precrop/latency_fit.py).
"""

from __future__ import annotations

import os
import tempfile

from tf_precrop import api
from tf_precrop import latency_fit
from tf_precrop import latency_model as latency_model_lib
from tf_precrop.export import latency as latency_lib
from tf_precrop.export import tflite as tflite_lib

# Re-exported: they were defined here before the fit moved to the core.
Calibration = latency_fit.Calibration
random_plans = latency_fit.random_plans


def export_calibration_set(model, directory: str, *, samples: int = 12, round_to: int = 8, seed: int = 0,
                           log=None) -> list:
    """Exports the dense model and ``samples`` randomly narrowed variants (the first half of a calibration).

    Exporting is slow and needs no quiet machine; timing (`fit_calibration_set`) does, so the two can run
    at different times.

    Args:
        model: the Keras 3 model you will crop (it is not modified).
        directory: where the .tflite files go.
        samples, round_to, seed: as in ``tf_precrop.latency_fit.random_plans`` (seed also seeds the
            variants' weights).
        log: progress printer (e.g. ``print``), or None.

    Returns:
        One dict per file, the dense model first: ``name``, ``path``, the latency features and
        ``macs_ratio``.

    Raises:
        ValueError: as `random_plans`.

    Example:
        >>> rows = export_calibration_set(model, "calibration/", samples=12)
    """
    plans = latency_fit.random_plans(model, samples, round_to=round_to, seed=seed)
    os.makedirs(directory, exist_ok=True)
    variants = [("dense", model)] + [(f"random_{i}", api.crop(model, p, seed=seed + i)) for i, p in enumerate(plans)]
    rows = []
    for label, variant in variants:
        path = os.path.join(directory, f"{model.name}_{label}.tflite")
        tflite_lib.to_tflite(variant, path, seed=seed)
        feats = latency_model_lib.features(variant)
        macs = feats["macs"] + feats["depthwise_macs"]
        rows.append({"name": label, "path": path, **feats,
                     "macs_ratio": macs / (rows[0]["macs"] + rows[0]["depthwise_macs"]) if rows else 1.0})
        if log:
            log(f"exported {label}: MACs ratio {rows[-1]['macs_ratio']:.3f}")
    return rows


def fit_calibration_set(rows, *, num_threads: int = 1, warmup_runs: int = 5, num_runs: int = 100,
                        rounds: int = 10, seed: int = 0, name: str = "") -> Calibration:
    """Times an exported calibration set alternately and fits a latency model to the p50s.

    Args:
        rows: output of `export_calibration_set`.
        num_threads, warmup_runs, num_runs, rounds, seed: as in ``benchmark_interleaved``.
        name: the latency model's name.

    Returns:
        A ``Calibration``.

    Raises:
        ValueError: as ``benchmark_interleaved`` and ``tf_precrop.latency_fit.fit_rates``.

    Example:
        >>> cal = fit_calibration_set(rows, num_threads=1, name="x86 1 thread")
    """
    stats = latency_lib.benchmark_interleaved([r["path"] for r in rows], num_threads=num_threads,
                                              warmup_runs=warmup_runs, num_runs=num_runs, rounds=rounds,
                                              seed=seed)
    measured = [s["p50_ms"] for s in stats]
    return latency_fit.calibration([{k: v for k, v in row.items() if k != "path"} for row in rows], measured,
                                   name=name)


def calibrate_latency(model, *, samples: int = 12, round_to: int = 8, num_threads: int = 1,
                      warmup_runs: int = 5, num_runs: int = 100, rounds: int = 10, seed: int = 0,
                      work_dir: str | None = None, name: str | None = None, log=None) -> Calibration:
    """Measures randomly narrowed variants of ``model`` with LiteRT here and fits a latency model.

    `export_calibration_set` then `fit_calibration_set`; call those two yourself to export on a busy
    machine and time on a quiet one.

    Args:
        model: the Keras 3 model you will crop (it is not modified).
        samples: number of narrowed variants (the dense model is always measured too).
        round_to: width multiple of the variants; use the one you will crop with.
        num_threads: LiteRT interpreter threads (the rates depend on it).
        warmup_runs, num_runs, rounds: as in ``tf_precrop.export.benchmark_interleaved``.
        seed: seed of the variants' widths and weights.
        work_dir: where the .tflite files go (default: a temporary directory, removed afterwards).
        name: the latency model's name (default: "<model> LiteRT <n> thread(s)").
        log: progress printer (e.g. ``print``), or None.

    Returns:
        A ``Calibration``: ``.latency_model`` (pass it to ``tf_precrop.crop(..., latency_model=...)``),
        ``.rows`` (measured vs predicted per variant) and ``.max_relative_error``.

    Raises:
        ValueError: as ``random_plans`` and ``benchmark_interleaved``.

    Example:
        >>> cal = tf_precrop.export.calibrate_latency(model, samples=12, round_to=8)
        >>> fast = tf_precrop.crop(model, latency=0.5, latency_model=cal.latency_model, round_to=8)
    """
    with tempfile.TemporaryDirectory() as tmp:
        rows = export_calibration_set(model, work_dir or tmp, samples=samples, round_to=round_to, seed=seed,
                                      log=log)
        return fit_calibration_set(
            rows, num_threads=num_threads, warmup_runs=warmup_runs, num_runs=num_runs, rounds=rounds, seed=seed,
            name=name or f"{model.name} LiteRT {num_threads} thread{'s' if num_threads > 1 else ''}")
