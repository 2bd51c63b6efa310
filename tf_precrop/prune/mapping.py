"""Channel index maps: which channel of the trained model every tensor position and weight axis holds.

The graph's layouts (``tf_precrop.graph``) say which *groups* make up a channel axis and in what
proportion; pruning a trained model needs more: *which index* of which group sits at each position. A
depthwise conv with ``depth_multiplier`` m puts input channel c at outputs ``c*m + j``; Flatten puts
channel c of position p at row ``p*C + c``; an Add makes position i of both operands one channel.

``ChannelMap`` walks the model like the graph walker and gives every channel of every group an
*elementary id*; each tensor carries an array of elementary ids (one per position of its channel axis).
Element-wise joins (Add, shared layers, nested models called twice) unite ids position by position, so
the union-find classes are the channels that must be kept or removed together (docs/method.md, "Weight
mapping"). Every weight of every layer then gets, per axis, the ids its slices belong to.

Which axis of which weight follows which tensor is layer-class knowledge; it lives in ``_HANDLERS``, a
dispatch table keyed by the graph's rule classes (one entry per rule, next to nothing else), so the rule
registry itself needs no change.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from tf_precrop.graph import registry
from tf_precrop.graph.walker import ModelGraph, functional_graph, topological_nodes


@dataclasses.dataclass
class WeightAxes:
    """Which channels each axis of one weight holds.

    Attributes:
        path: path of the layer ("layer" or "outer/inner").
        layer: the layer object of the original model.
        index: position of the weight in ``layer.weights``.
        name: the weight's name (``kernel``, ``gamma``...).
        axes: per axis, an int array of elementary channel ids (one per index along that axis), or None
            when the axis does not follow channels (kept whole).
        kernel: the weight is a conv/dense kernel (what ``"l1"``/``"l2"`` importance measures).
        groups: for a grouped conv kernel ``(..., in/groups, out)``: ``groups``; axis -2 then holds the
            ids of *all* ``in`` input channels, and filter block b reads input block b.
    """

    path: str
    layer: object
    index: int
    name: str
    axes: tuple
    kernel: bool = False
    groups: int = 1

    @property
    def variable(self):
        return self.layer.weights[self.index]


class ChannelMap:
    """Elementary channel ids of every tensor and weight axis of a model, and the classes that go together.

    Args:
        model: the Keras 3 model the graph was built from.
        graph: its ``ModelGraph`` (layouts, groups and records).

    Attributes:
        weights: ``WeightAxes`` for every weight of every layer (shared layers once).
        group_of: elementary id -> group id of the graph.
        class_of: elementary id -> class index (channels kept or removed together), after ``finish``.
        tags: elementary id -> set of constraints beyond the group (grouped-conv blocks).
    """

    def __init__(self, model, graph: ModelGraph, custom_rules=None):
        self.graph = graph
        self.custom_rules = custom_rules
        groups = graph.groups
        widths = [groups.dense_width(g) for g in range(len(groups))]
        self.base = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        self.group_of = np.repeat(np.arange(len(widths)), widths)
        self._parent = np.arange(int(self.base[-1]))
        self.tags: dict = {}
        self.weights: list[WeightAxes] = []
        self._first: dict = {}  # id(layer) -> input ids of its first call
        self._nested: dict = {}  # id(model) -> (input ids, output ids) of its first call
        functional = functional_graph(model)
        self._walk(functional, "", [self.ids_of(t) for t in functional.inputs])
        roots = np.array([self._find(i) for i in range(len(self._parent))], dtype=np.int64)
        # Unions attach the larger id below the smaller, so classes come in the order of their first channel.
        _, self.class_of = np.unique(roots, return_inverse=True)
        self.num_classes = int(self.class_of.max()) + 1 if len(self.class_of) else 0

    # --- Union-find over elementary ids -----------------------------------------------------------
    def _find(self, i):
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def unite(self, a, b) -> None:
        """Makes position i of ``a`` and of ``b`` one channel, for every i."""
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def tag(self, ids, label) -> None:
        for i in np.asarray(ids).tolist():
            self.tags.setdefault(i, set()).add(label)

    # --- Ids of tensors -------------------------------------------------------------------------------
    def ids_of(self, tensor) -> np.ndarray:
        """Ids of a tensor whose layout lists whole groups (inputs, conv outputs, fixed outputs)."""
        parts = []
        for seg in self.graph.layout_of(tensor):
            if seg.mult != 1:
                raise AssertionError(f"layout {self.graph.layout_of(tensor)} repeats channels; its order is "
                                     "known only to the layer that made it")
            parts.append(np.arange(self.base[seg.group], self.base[seg.group + 1]))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # --- The walk (mirrors tf_precrop.graph.walker.ModelGraph._walk) -----------------------------------
    def _walk(self, functional, prefix, in_ids):
        ids = {id(t): v for t, v in zip(functional.inputs, in_ids)}
        for node in topological_nodes(functional):
            op = node.operation
            if isinstance(op, keras.layers.InputLayer):
                continue
            ins = [ids[id(t)] for t in node.input_tensors]
            if isinstance(op, keras.Model):
                outs = self._walk_nested(op, prefix + op.name, ins)
            else:
                outs = self._call(op, prefix + op.name, node, ins)
            for tensor, value in zip(node.output_tensors, outs):
                ids[id(tensor)] = value
        return [ids[id(t)] for t in functional.outputs]

    def _walk_nested(self, model, path, ins):
        key = id(model)
        if key not in self._nested:
            outs = self._walk(functional_graph(model), path + "/", ins)
            self._nested[key] = (ins, outs)
            return outs
        first_ins, outs = self._nested[key]
        for a, b in zip(first_ins, ins):
            self.unite(a, b)
        return outs

    def _call(self, layer, path, node, ins):
        rule = registry.rule_for(layer, self.custom_rules) or registry.Fixed()
        first = id(layer) not in self._first
        if first:
            self._first[id(layer)] = ins
        elif getattr(layer, "weights", None):
            # One set of weights: every call sees the same input channels (the walker ties them too).
            for a, b in zip(self._first[id(layer)], ins):
                self.unite(a, b)
        handler = _handler_for(rule)
        if handler is None:
            raise ValueError(
                f"tf_precrop.prune does not know how the weights of layer '{path}' ({type(layer).__name__}, "
                f"rule {type(rule).__name__}) map to channels. Pass ignored_layers=['{layer.name}'] to keep its "
                "widths and weights as they are."
            )
        outs, axes = handler(self, _CallInfo(layer, path, node, ins))
        if first and isinstance(layer, keras.layers.Layer):
            axes = axes or {}
            for index, w in enumerate(layer.weights):
                spec = axes.get(index) or WeightAxes(path, layer, index, w.name, (None,) * len(w.shape))
                self.weights.append(spec)
        return outs


@dataclasses.dataclass
class _CallInfo:
    layer: object
    path: str
    node: object
    ins: list

    @property
    def in_shape(self):
        return tuple(self.node.input_tensors[0].shape)

    def out_ids(self, cmap, index=0):
        return cmap.ids_of(self.node.output_tensors[index])

    def spec(self, index, axes, **kwargs):
        w = self.layer.weights[index]
        return WeightAxes(self.path, self.layer, index, w.name, tuple(axes), **kwargs)


def _kernel_axes(rank, in_axis, in_ids, out_axis, out_ids):
    axes = [None] * rank
    axes[in_axis], axes[out_axis] = in_ids, out_ids
    return axes


def _bias_and_kernel(call, kernel_axes, out_ids, **kernel_kwargs):
    """Kernel with the given axes, every other weight (bias) along the output channels."""
    specs = {}
    for index, w in enumerate(call.layer.weights):
        if w is call.layer.kernel:
            specs[index] = call.spec(index, kernel_axes, kernel=True, **kernel_kwargs)
        else:
            specs[index] = call.spec(index, [out_ids])
    return specs


def _conv(cmap, call):
    """Conv1D/2D/3D (kernel ``(..., in/groups, out)``) and Dense (``(in, out)``)."""
    layer, in_ids = call.layer, call.ins[0]
    rank = len(layer.kernel.shape)
    groups = layer.get_config().get("groups", 1)
    if groups > 1 and groups == call.in_shape[-1]:
        # Depthwise written as Conv2D(groups == C) (ConvNeXt): filter c*mult + j reads input channel c.
        out_ids = np.repeat(in_ids, layer.kernel.shape[-1] // groups)
        return [out_ids], _bias_and_kernel(call, _kernel_axes(rank, -2, None, -1, out_ids), out_ids)
    out_ids = call.out_ids(cmap)
    if groups > 1:
        # Filter block b reads input block b: every block must keep the same number of channels.
        for b, block in enumerate(np.split(in_ids, groups)):
            cmap.tag(block, (call.path, "in", b))
        for b, block in enumerate(np.split(out_ids, groups)):
            cmap.tag(block, (call.path, "out", b))
    axes = _kernel_axes(rank, -2, in_ids, -1, out_ids)
    return [out_ids], _bias_and_kernel(call, axes, out_ids, groups=groups)


def _conv_transpose(cmap, call):
    """Conv*Transpose kernels are ``(..., out, in)``."""
    out_ids = call.out_ids(cmap)
    rank = len(call.layer.kernel.shape)
    return [out_ids], _bias_and_kernel(call, _kernel_axes(rank, -1, call.ins[0], -2, out_ids), out_ids)


def _depthwise(cmap, call):
    """DepthwiseConv kernel ``(..., C, m)``: output c*m + j reads input channel c."""
    in_ids = call.ins[0]
    out_ids = np.repeat(in_ids, call.layer.depth_multiplier)
    rank = len(call.layer.kernel.shape)
    return [out_ids], _bias_and_kernel(call, _kernel_axes(rank, -2, in_ids, -1, None), out_ids)


def _separable(cmap, call):
    """SeparableConv: depthwise ``(..., C, m)``, pointwise ``(..., C*m, out)`` (row c*m + j), bias."""
    layer, in_ids = call.layer, call.ins[0]
    out_ids = call.out_ids(cmap)
    mid_ids = np.repeat(in_ids, layer.depth_multiplier)
    specs = {}
    for index, w in enumerate(layer.weights):
        rank = len(w.shape)
        if w is layer.depthwise_kernel:
            specs[index] = call.spec(index, _kernel_axes(rank, -2, in_ids, -1, None), kernel=True)
        elif w is layer.pointwise_kernel:
            specs[index] = call.spec(index, _kernel_axes(rank, -2, mid_ids, -1, out_ids), kernel=True)
        else:
            specs[index] = call.spec(index, [out_ids])
    return [out_ids], specs


def _flatten(cmap, call):
    """Flatten (channels last): row p*C + c holds channel c of position p."""
    return [np.tile(call.ins[0], math.prod(call.in_shape[1:-1]))], {}


def _reshape(cmap, call):
    in_shape, out_shape = call.in_shape, tuple(call.node.output_tensors[0].shape)
    if in_shape[-1] == out_shape[-1] and math.prod(in_shape[1:-1]) == math.prod(out_shape[1:-1]):
        return [call.ins[0]], {}
    if len(out_shape) == 2:
        return _flatten(cmap, call)
    return [call.out_ids(cmap)], {}


def _merge(cmap, call):
    """Element-wise joins: position i of every full-width operand is one channel; (..., 1) broadcasts."""
    shapes = [tuple(t.shape) for t in call.node.input_tensors]
    full = [ids for ids, shape in zip(call.ins, shapes) if shape[-1] != 1]
    if not full:
        return [call.ins[0]], {}
    for ids in full[1:]:
        cmap.unite(full[0], ids)
    return [full[0]], {}


def _concat(cmap, call):
    rank = len(call.node.output_tensors[0].shape)
    if call.layer.get_config().get("axis", -1) % rank == rank - 1:
        return [np.concatenate(call.ins)], {}
    return _merge(cmap, call)


def _pass_through(cmap, call):
    """BN, LN, PReLU, LayerScale...: every weight whose last axis has the channel width follows them."""
    in_ids = call.ins[0]
    if isinstance(call.layer, keras.layers.GroupNormalization):
        # Channel c is normalized with block c // (C / groups): every block keeps the same number.
        for b, block in enumerate(np.split(in_ids, call.layer.groups)):
            cmap.tag(block, (call.path, "group", b))
    specs = {}
    for index, w in enumerate(getattr(call.layer, "weights", ())):
        if len(w.shape) and w.shape[-1] == len(in_ids) and "float" in str(w.dtype):
            specs[index] = call.spec(index, [None] * (len(w.shape) - 1) + [in_ids])
    return [in_ids], specs


def _fixed(cmap, call):
    """Layers whose widths stay: new output groups, weights kept whole."""
    return [call.out_ids(cmap, i) for i in range(len(call.node.output_tensors))], {}


# Rule class -> handler. Subclasses come before their bases (looked up in order with isinstance).
_HANDLERS = [
    (registry.ConvTranspose, _conv_transpose),
    (registry.Conv, _conv),  # DenseRule too: a Dense kernel is (in, out)
    (registry.Depthwise, _depthwise),
    (registry.Separable, _separable),
    (registry.Flatten, _flatten),
    (registry.Reshape, _reshape),
    (registry.Concat, _concat),
    (registry.Merge, _merge),  # ScaleAdd too
    (registry.PassThrough, _pass_through),  # KeepInput, LayerScale too
    (registry.Fixed, _fixed),
]


def _handler_for(rule):
    for cls, handler in _HANDLERS:
        if isinstance(rule, cls):
            return handler
    return None


def layer_at(model, path: str):
    """The layer at ``path`` ("layer" or "outer/inner") of a model with nested models."""
    layer = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer


def slice_weight(spec: WeightAxes, value: np.ndarray, kept) -> np.ndarray:
    """The surviving part of a weight, indices in their original order.

    Args:
        spec: the weight's axes.
        value: its values in the original model.
        kept: ``ids -> bool mask`` (which elementary channels survive).
    """
    for axis, ids in enumerate(spec.axes):
        if ids is None:
            continue
        if spec.groups > 1 and axis == value.ndim - 2:
            continue  # sliced per filter block below
        value = np.compress(kept(ids), value, axis=axis)
    if spec.groups > 1:
        # Filter block b reads input block b: slice each block's rows by its own kept input channels.
        in_ids, out_ids = spec.axes[-2], spec.axes[-1]
        in_blocks = np.split(in_ids, spec.groups)
        out_counts = [int(kept(block).sum()) for block in np.split(out_ids, spec.groups)]
        starts = np.concatenate([[0], np.cumsum(out_counts)])
        blocks = []
        for b, block in enumerate(in_blocks):
            part = value[..., starts[b]:starts[b + 1]]
            blocks.append(np.compress(kept(block), part, axis=-2))
        value = np.concatenate(blocks, axis=-1)
    return value
