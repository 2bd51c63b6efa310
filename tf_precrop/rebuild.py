"""Rebuilds a Keras 3 model with new widths: same topology and layer names, fresh initialisation."""

from __future__ import annotations

import keras
from keras.src import tree

from tf_precrop.graph.op_rules import rebuild_op
from tf_precrop.graph.registry import rule_for
from tf_precrop.graph.walker import functional_graph, topological_nodes


def rebuild(model, updates: dict, *, seed: int | None = None, custom_rules=None) -> keras.Model:
    """A new model like ``model`` with the config fields in ``updates`` changed.

    Every layer is created anew from its config, so initializers see the new fan-in. Nested models are
    rebuilt (a nested model called twice stays shared), and so are shared layers. Layers whose rule keeps
    weights (Normalization statistics) get the original values. A layer without a rule (it is ignored: its
    widths stay) and without weights, such as a Python ``Lambda`` that ``from_config`` refuses in safe mode,
    is reused as it is: it holds no state the two models could share.

    Args:
        model: the original Keras 3 model; it is not modified.
        updates: layer path ("layer" or "outer/inner") -> config fields to set.
        seed: if given, ``keras.utils.set_random_seed(seed)`` first, so the initial weights are reproducible.
        custom_rules: per-call rules (``{layer class: Rule}``), for the rules that keep weights.

    Returns:
        The new model.

    Example:
        >>> small = rebuild(model, {"conv1": {"filters": 16}}, seed=0)
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    builder = _Builder(updates, custom_rules)
    new_model = builder.model(model, "")
    for old, new in builder.kept_weights:
        new.set_weights(old.get_weights())
    _keep_pyramid_outputs(model, new_model, builder)
    return new_model


def _keep_pyramid_outputs(model, new_model, builder):
    """A keras_hub backbone's ``pyramid_outputs`` (feature maps by level, read by task heads) point into the
    rebuilt graph, for the model and every nested one (docs/method.md, "Composite layers and keras_hub")."""
    pairs = [(model, new_model)] + [(op, builder.new_ops.get(id(op))) for op in _nested_models(model)]
    for old, new in pairs:
        pyramid = getattr(old, "pyramid_outputs", None)
        if new is None or not isinstance(pyramid, dict) or not pyramid:
            continue
        new.pyramid_outputs = {level: builder.tensors[id(t)] for level, t in pyramid.items()
                               if id(t) in builder.tensors}


def _nested_models(model):
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):
            found.append(layer)
            stack.extend(layer.layers)
    return found


class _Builder:
    def __init__(self, updates, custom_rules=None):
        self.updates = updates
        self.custom_rules = custom_rules
        self.new_ops: dict = {}  # id(old op) -> new op (keeps shared layers and nested models shared)
        self.kept_weights: list = []
        self.tensors: dict = {}  # id(old tensor) -> new tensor, over every rebuilt graph

    def model(self, model, prefix, like=None):
        """Rebuilds ``model``; ``like`` are the new tensors it will be called on (nested models), whose
        shapes its new inputs take: its input widths may have changed."""
        if isinstance(model, keras.Sequential):
            return self._sequential(model, prefix, like)
        return self._functional(functional_graph(model), prefix, model.name, like)

    def _sequential(self, model, prefix, like):
        # Each layer is rebuilt like in a functional graph (a nested model through `self.model`, with the
        # new tensor it is called on, so its input widths follow); then the chain becomes a Sequential again.
        functional = functional_graph(model)
        inputs = [self._input(t, n) for t, n in zip(functional.inputs, like or functional.inputs)]
        x, layers = inputs[0], []
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                new = self.new_ops.get(id(layer))
                if new is None:
                    new = self.new_ops[id(layer)] = self.model(layer, prefix + layer.name + "/", [x])
            else:
                new = self._layer(layer, prefix + layer.name)
            layers.append(new)
            x = new(x)
        return keras.Sequential([*inputs_as_layers(inputs), *layers], name=model.name, trainable=model.trainable)

    def _functional(self, functional, prefix, name, like):
        tensors = {}
        for tensor, shaped in zip(functional.inputs, like or functional.inputs):
            tensors[id(tensor)] = self._input(tensor, shaped)
        for node in topological_nodes(functional):
            op = node.operation
            if isinstance(op, keras.layers.InputLayer):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            new_op = self.new_ops.get(id(op))
            if new_op is None:
                if isinstance(op, keras.Model):
                    like = [tensors[id(t)] for t in node.input_tensors]
                    new_op = self.model(op, prefix + op.name + "/", like)
                elif isinstance(op, keras.layers.Layer):
                    new_op = self._layer(op, prefix + op.name)
                else:
                    new_op = op  # a stateless op such as `a + b`
                self.new_ops[id(op)] = new_op
            if not isinstance(op, keras.layers.Layer):
                # keras.ops node: a fresh op, with arguments that hold widths (split indices...) rewritten.
                new_op, args, kwargs = rebuild_op(op, node, args, kwargs)
            outputs = new_op(*args, **kwargs)
            for old, new in zip(node.output_tensors, tree.flatten(outputs)):
                tensors[id(old)] = new
        self.tensors.update(tensors)
        outputs = tree.map_structure(lambda t: tensors[id(t)], functional._outputs_struct)
        inputs = tree.map_structure(lambda t: tensors[id(t)], functional._inputs_struct)
        new = keras.Model(inputs=inputs, outputs=outputs, name=name)
        new.trainable = functional.trainable
        return new

    def _input(self, tensor, shaped):
        layer = tensor._keras_history.operation
        return keras.Input(batch_shape=shaped.shape, dtype=tensor.dtype, sparse=tensor.sparse, name=layer.name)

    def _layer(self, layer, path):
        if id(layer) in self.new_ops:
            return self.new_ops[id(layer)]
        rule = rule_for(layer, self.custom_rules)
        update = self.updates.get(path, {})
        if not layer.weights and not update and (rule is None or isinstance(layer, keras.layers.Lambda)):
            self.new_ops[id(layer)] = layer
            return layer
        config = layer.get_config()
        config.update(update)
        new = type(layer).from_config(config)
        if rule is not None and rule.keep_weights:
            self.kept_weights.append((layer, new))
        self.new_ops[id(layer)] = new
        return new


def inputs_as_layers(inputs):
    return [t._keras_history.operation for t in inputs]
