"""Unstructured pruning at initialization: the baseline arm PreCrop is compared with.

Masks are computed on the Keras 3 model (plain numpy, keyed
``"<layer path>/<kernel attribute>"``) and applied in TensorFlow Model
Optimization on a tf_keras twin. Importing this package imports neither
``tensorflow_model_optimization`` nor ``tf_keras``; only
:func:`to_tfmot`, :func:`to_tf_keras`, :func:`callbacks` and :func:`strip`
load them, lazily. See docs/sparsity.md.

Example:
    >>> from tf_precrop import sparsity
    >>> masks = sparsity.synflow(model, flops=0.5)
    >>> pruned = sparsity.to_tfmot(model, masks)
    >>> pruned.fit(x, y, callbacks=sparsity.callbacks())
    >>> final = sparsity.strip(pruned)
"""

from tf_precrop.sparsity.densities import erk_densities
from tf_precrop.sparsity.densities import optimal_densities
from tf_precrop.sparsity.densities import solve_densities
from tf_precrop.sparsity.densities import uniform_densities
from tf_precrop.sparsity.densities import water_filling
from tf_precrop.sparsity.masks import GRANULARITIES
from tf_precrop.sparsity.masks import Masks
from tf_precrop.sparsity.masks import channel_masks
from tf_precrop.sparsity.masks import live_macs
from tf_precrop.sparsity.masks import masked_cost
from tf_precrop.sparsity.masks import random_masks
from tf_precrop.sparsity.methods import METHODS
from tf_precrop.sparsity.methods import compute_masks
from tf_precrop.sparsity.methods import erk
from tf_precrop.sparsity.methods import grasp
from tf_precrop.sparsity.methods import magnitude
from tf_precrop.sparsity.methods import optimal
from tf_precrop.sparsity.methods import random
from tf_precrop.sparsity.methods import snip
from tf_precrop.sparsity.methods import synflow
from tf_precrop.sparsity.methods import synflow_random
from tf_precrop.sparsity.methods import uniform
from tf_precrop.sparsity.prunable import PrunableKernel
from tf_precrop.sparsity.prunable import prunable_kernels
from tf_precrop.sparsity.scores import synflow_scores
from tf_precrop.sparsity.synexp import synexp
from tf_precrop.sparsity.synexp import synflow_objective
from tf_precrop.sparsity.tfmot_bridge import callbacks
from tf_precrop.sparsity.tfmot_bridge import clean_env
from tf_precrop.sparsity.tfmot_bridge import strip
from tf_precrop.sparsity.tfmot_bridge import to_tf_keras
from tf_precrop.sparsity.tfmot_bridge import to_tfmot

__all__ = [
    "GRANULARITIES",
    "METHODS",
    "callbacks",
    "channel_masks",
    "clean_env",
    "compute_masks",
    "erk",
    "erk_densities",
    "grasp",
    "live_macs",
    "magnitude",
    "masked_cost",
    "Masks",
    "optimal",
    "optimal_densities",
    "prunable_kernels",
    "PrunableKernel",
    "random",
    "random_masks",
    "snip",
    "solve_densities",
    "strip",
    "synexp",
    "synflow",
    "synflow_objective",
    "synflow_random",
    "synflow_scores",
    "to_tf_keras",
    "to_tfmot",
    "uniform",
    "uniform_densities",
    "water_filling",
]
