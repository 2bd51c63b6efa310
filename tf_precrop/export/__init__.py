"""TFLite export with parity checks, LiteRT latency, and Android measurements.

Example:
    >>> from tf_precrop import export
    >>> info = export.to_tflite(small, "small.tflite")            # verified against `small`
    >>> stats = export.benchmark("small.tflite", num_threads=1)   # init, first run, mean, p50, p95, std
    >>> print(export.format_table([stats]))
    >>> cal = export.calibrate_latency(model)                    # a LatencyModel of this device
"""

from tf_precrop.export.android import AdbError
from tf_precrop.export.android import parse_benchmark_output
from tf_precrop.export.android import run_on_device
from tf_precrop.export.calibrate import Calibration
from tf_precrop.export.calibrate import calibrate_latency
from tf_precrop.export.calibrate import export_calibration_set
from tf_precrop.export.calibrate import fit_calibration_set
from tf_precrop.export.calibrate import random_plans
from tf_precrop.export.latency import benchmark
from tf_precrop.export.latency import benchmark_interleaved
from tf_precrop.export.latency import format_table
from tf_precrop.export.latency import summarize
from tf_precrop.export.tflite import FLOAT_TOLERANCE
from tf_precrop.export.tflite import QUANTIZATIONS
from tf_precrop.export.tflite import QUANTIZED_TOLERANCE
from tf_precrop.export.tflite import ExportParityError
from tf_precrop.export.tflite import to_tflite

__all__ = [
    "FLOAT_TOLERANCE",
    "QUANTIZATIONS",
    "QUANTIZED_TOLERANCE",
    "AdbError",
    "Calibration",
    "ExportParityError",
    "benchmark",
    "benchmark_interleaved",
    "calibrate_latency",
    "export_calibration_set",
    "fit_calibration_set",
    "format_table",
    "parse_benchmark_output",
    "random_plans",
    "run_on_device",
    "summarize",
    "to_tflite",
]
