"""Channel-group analysis of Keras 3 models: walker, groups, layouts and the per-layer rule registry."""

from tf_precrop.graph.registry import REGISTRY, Rule, register_layer
from tf_precrop.graph.walker import ModelGraph, functional_graph

__all__ = ["REGISTRY", "ModelGraph", "Rule", "functional_graph", "register_layer"]
