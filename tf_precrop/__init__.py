"""tf_precrop: structured pruning at initialization (PreCrop / PreConfig) for Keras 3.

Public API::

    tf_precrop.count(model)                     # MACs / params per layer (FLOPs = 2 x MACs)
    tf_precrop.plan(model, flops=0.5)           # CropPlan: widths before -> after, without building
    tf_precrop.crop(model, flops=0.5)           # a new, narrower, freshly initialised model
    tf_precrop.preconfig(model, flops=1.0)      # widths redistributed at equal cost
    tf_precrop.crop(model, latency=0.5, latency_model=m)  # budget on a device's predicted latency
    tf_precrop.supports(keras.layers.LSTM)      # is a layer class understood? (else ignore it or add a Rule)
    tf_precrop.prune(trained, flops=0.5)        # a trained model pruned, surviving weights kept
"""

from tf_precrop import latency_model, models
from tf_precrop.api import DEFAULT_MAX_RATIO, crop, plan, preconfig, preconfig_plan
from tf_precrop.cost import CostReport, KernelCost, LayerCost, count
from tf_precrop.graph.registry import Rule, register_layer, supports
from tf_precrop.latency_model import LatencyModel
from tf_precrop.plan import CropPlan

# The function shadows its subpackage's name on `tf_precrop`; `from tf_precrop.prune import mapping` still works.
from tf_precrop.prune import Distiller, PruneReport, prune, prune_iteratively
from tf_precrop.solver import InfeasibleBudgetError
from tf_precrop.verify import PlanMismatchError

__version__ = "0.1.0"

# Beside the core line, imported on first use so that `import tf_precrop` stays light and never touches
# TF-MOT: `tf_precrop.export.to_tflite(...)` works after a plain `import tf_precrop`.
_LAZY_SUBMODULES = ("data", "export", "report", "sparsity")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"tf_precrop.{name}")
    raise AttributeError(f"module 'tf_precrop' has no attribute {name!r}")

__all__ = [
    "DEFAULT_MAX_RATIO",
    "CostReport",
    "CropPlan",
    "Distiller",
    "InfeasibleBudgetError",
    "KernelCost",
    "LatencyModel",
    "LayerCost",
    "PlanMismatchError",
    "Rule",
    "PruneReport",
    "prune_iteratively",
    "count",
    "crop",
    "latency_model",
    "models",
    "plan",
    "preconfig",
    "preconfig_plan",
    "prune",
    "register_layer",
    "supports",
]
