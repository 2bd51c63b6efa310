"""Rules for keras.ops operations recorded as nodes of a functional graph.

Calling ``keras.ops.pad``, ``ops.split``, ``ops.relu``, ``x * 0.5``... on Keras tensors records a stateless
``keras.Operation`` (not a layer) whose arguments live in op attributes (``pad_width``,
``indices_or_sections``, ``axis``, ``newshape``) or in the call arguments (``x[..., a:b]``'s key). The rules
here say what each op does to the channel axis (docs/method.md, "keras.ops nodes"):

* element-wise math and activations tie their tensor operands like ``Add`` (a constant operand as wide as
  the channels keeps them fixed);
* padding, pooling and resizing ops pass channels through; zero channel padding adds fixed channels;
* ``split`` / ``concatenate`` along channels act like slices / ``Concatenate``; an equal split keeps its
  parts equal, a split at indices scales all its parts by one ratio;
* reductions over spatial axes pass channels through; over the channel axis they give a fixed width;
* reshape, transpose, expand_dims, squeeze and slicing that keep the channel axis last pass it through;
  those that move, merge or select channels keep their input width fixed, with the reason in the plan;
* ops whose weights are call arguments (``ops.conv``, ``ops.matmul``...) are refused: their cost and
  widths live outside the graph tf_precrop can see.

The rebuild calls ``rewrite_op`` on every op node: a new op object (the user's model is not touched) with
arguments that hold widths (split indices, reshape targets, slice sizes) rewritten for the new widths.
"""

from __future__ import annotations

from fractions import Fraction

import keras
import numpy as np

from tf_precrop.graph import layout as layout_lib
from tf_precrop.graph import registry
from tf_precrop.graph.layout import Segment


def is_op(obj) -> bool:
    """True for a keras.ops operation node (a ``keras.Operation`` that is not a layer)."""
    return isinstance(obj, keras.Operation) and not isinstance(obj, keras.layers.Layer)


def describe(layer, path: str | None = None) -> str:
    """How messages name a graph node: ``Layer 'x' of class Y`` or ``Operation 'x' (keras.ops Pad)``.

    Args:
        layer: a layer or a keras.ops operation of the graph.
        path: its path in the model ("outer/inner"); defaults to its name.

    Returns:
        The phrase, starting with a capital letter.

    Example:
        >>> describe(pad_op)
        "Operation 'pad' (keras.ops Pad)"
    """
    path = layer.name if path is None else path
    cls = type(layer)
    if not is_op(layer):
        return f"Layer '{path}' of class {cls.__name__}"
    origin = "keras.ops" if cls.__module__.startswith("keras.src.ops") else "keras.Operation"
    return f"Operation '{path}' ({origin} {cls.__name__})"


def _class_path(cls) -> str:
    """How the user can name a class in ``register_layer``: ops classes are not exported by keras.ops."""
    return cls.__name__ if not cls.__module__.startswith("keras.src") else f"{cls.__module__}.{cls.__name__}"


def unsupported_message(layer, path: str) -> str:
    """The error for a layer or op without a rule (advice that works when followed).

    Example:
        >>> unsupported_message(glu_op, "glu")
        "Operation 'glu' (keras.ops Glu) is not supported: ..."
    """
    how = "register a rule for its class" if is_op(layer) else "describe it"
    return (
        f"{describe(layer, path)} is not supported: tf_precrop cannot tell how it treats channels. Pass "
        f"ignored_layers=['{layer.name}'] to keep its input and output widths fixed, or {how} with "
        f"tf_precrop.register_layer({_class_path(type(layer))}, ...)."
    )


def fresh_op(op, **changes):
    """A new op object like ``op`` (same name), with ``changes`` to its constructor arguments.

    Reusing the user's op object would add nodes to it; an op whose arguments cannot be serialized is
    reused only when nothing changes.
    """
    try:
        config = op.get_config()
    except NotImplementedError:
        if changes:
            raise
        return op
    config.update(changes)
    return type(op).from_config(config)


def _rank_check(call):
    for shape in (*call.in_shapes[:1], *call.out_shapes):
        if len(shape) < 2:
            raise ValueError(
                f"{describe(call.layer, call.path)} gives or takes a tensor of shape {shape}, without batch and "
                "channel axes. tf_precrop follows channels through tensors of rank >= 2: reduce over the spatial "
                "axes only (e.g. axis=(1, 2)), or apply the op after the model."
            )


def _channels_last(call):
    fmt = getattr(call.layer, "data_format", None) or keras.config.image_data_format()
    if fmt == "channels_first":
        raise ValueError(
            f"{describe(call.layer, call.path)} uses data_format='channels_first'. tf_precrop supports "
            "channels_last models only; pass data_format='channels_last'."
        )


def _fixed(graph, call, reason):
    """Keeps the input width and gives the output a fixed width (the op moves or selects channels)."""
    graph.pin_layout(call.in_layouts[0], f"'{call.path}' {reason}")
    return [graph.fixed_layout(call, shape[-1], index=i) for i, shape in enumerate(call.out_shapes)]


def _const_shapes(call):
    """Shapes of the call's non-tensor array operands (``x * np.ones(C)``), scalars excluded."""
    if call.arguments is None:
        return []
    shapes = []
    for value in (*call.arguments.args, *call.arguments.kwargs.values()):
        if isinstance(value, (keras.KerasTensor, str, list, tuple, dict)) or value is None:
            continue
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape):
            shapes.append(tuple(shape))
    return shapes


class OpRule(registry.Rule):
    """Base of the keras.ops rules: no params, no MACs; the rebuilt op is a fresh copy."""

    def terms(self, graph, call, outs):
        return []

    def rewrite_op(self, op, node, args, kwargs):
        return fresh_op(op), args, kwargs


class ElementwiseOp(OpRule, registry.Merge):
    """Element-wise math, comparisons and activations: tensor operands tie like ``Add``.

    A constant array operand (not a Keras tensor) as wide as the channels keeps them fixed: it would not
    broadcast against a narrower tensor.
    """

    def connect(self, graph, call):
        _rank_check(call)
        outs = registry.Merge.connect(self, graph, call)
        width = call.out_shapes[0][-1]
        for shape in _const_shapes(call):
            if shape[-1] == width and width != 1:
                graph.pin_layout(outs[0], f"'{call.path}' combines it with a constant of shape {shape}")
        return outs


class SpatialOp(OpRule):
    """Pooling, resizing and image padding/cropping ops: channels pass through (channels_last only)."""

    def connect(self, graph, call):
        _rank_check(call)
        _channels_last(call)
        return [call.in_layouts[0]]


class PadOp(OpRule):
    """``ops.pad``: spatial padding passes channels through; padding the channel axis adds fixed channels."""

    def connect(self, graph, call):
        _rank_check(call)
        op, lay = call.layer, call.in_layouts[0]
        pad_width = op.pad_width
        before, after = pad_width[-1] if len(pad_width) == len(call.in_shapes[0]) else pad_width[0]
        if (before, after) == (0, 0):
            return [lay]
        if op.mode != "constant":
            # reflect/symmetric/edge padding copies channels: the copied ones must exist at any width.
            graph.pin_layout(lay, f"'{call.path}' pads the channel axis in mode '{op.mode}'")
        pads = {}
        for side, width in (("before", before), ("after", after)):
            if width:
                gid = graph.groups.new(width, f"{call.path}:{side}", pin=f"channels padded in by '{call.path}'")
                pads[side] = layout_lib.single(gid)
        return [(*pads.get("before", ()), *lay, *pads.get("after", ()))]


class ConcatOp(OpRule, registry.Concat):
    """``ops.concatenate``: along channels a composite layout, along another axis a merge."""


class SplitOp(OpRule):
    """``ops.split`` along channels: each part is a new group, all scaled by one ratio with the input.

    Equal parts (``indices_or_sections=n``, CSPNet's halves) stay equal; a split at indices keeps their
    proportions, so the rebuild scales the indices by the input's width ratio.
    """

    def connect(self, graph, call):
        _rank_check(call)
        op, lay = call.layer, call.in_layouts[0]
        rank = len(call.in_shapes[0])
        if op.axis % rank != rank - 1:
            return [lay for _ in call.out_shapes]
        sizes = [shape[-1] for shape in call.out_shapes]
        if not all(sizes):
            return _fixed(graph, call, f"splits off an empty part (sizes {sizes})")
        parts = [graph.groups.new(size, f"{call.path}:{i}") for i, size in enumerate(sizes)]
        for gid, size in zip(parts[1:], sizes[1:]):
            graph.groups.tie(gid, parts[0], Fraction(size, sizes[0]), reason=f"parts of '{call.path}'")
        graph.tie_layouts(lay, tuple(Segment(gid) for gid in parts), call.path)
        return [layout_lib.single(gid) for gid in parts]

    def rewrite_op(self, op, node, args, kwargs):
        old, new = node.input_tensors[0].shape, args[0].shape
        rank = len(old)
        if op.axis % rank != rank - 1 or isinstance(op.indices_or_sections, int):
            return fresh_op(op), args, kwargs
        indices = [_scaled_index(i, new[-1], old[-1], op) for i in op.indices_or_sections]
        return fresh_op(op, indices_or_sections=tuple(indices)), args, kwargs


def _scaled_index(index, new_width, old_width, op):
    value = Fraction(index * new_width, old_width)
    if value.denominator != 1:  # the split's ties keep its parts proportional: this cannot happen
        raise AssertionError(f"'{op.name}': split index {index} does not scale to width {new_width}")
    return int(value)


def _axes(axis, rank):
    if axis is None:
        return set(range(rank))
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return {a % rank for a in axes}


class ReduceOp(OpRule):
    """mean/max/min/sum/... : over spatial axes channels pass through; over channels the width is fixed."""

    def connect(self, graph, call):
        _rank_check(call)
        rank = len(call.in_shapes[0])
        if rank - 1 not in _axes(call.layer.axis, rank):
            return [call.in_layouts[0]]
        # Reducing over the channels works at any input width; the output has no channel axis left.
        return [graph.fixed_layout(call, call.out_shapes[0][-1])]


class ReshapeOp(OpRule):
    """``ops.reshape`` keeping the last axis (squeeze-excite's (-1, 1, 1, C)) or flattening to (B, N) is
    rewritten with the new width; a reshape that merges or splits the channel axis keeps its widths."""

    @staticmethod
    def _kind(in_shape, out_shape):
        if len(out_shape) >= 2 and out_shape[-1] == in_shape[-1] and (
                registry._positions(in_shape) == registry._positions(out_shape)):
            return "keep"
        if len(out_shape) == 2 and out_shape[-1] == registry._size(in_shape[1:]):
            return "flatten"
        return "moves"

    def connect(self, graph, call):
        _rank_check(call)
        in_shape, out_shape = call.in_shapes[0], call.out_shapes[0]
        kind = self._kind(in_shape, out_shape)
        if kind == "keep":
            return [call.in_layouts[0]]
        if kind == "flatten":
            return [layout_lib.scaled(call.in_layouts[0], registry._positions(in_shape))]
        return _fixed(graph, call, f"reshapes the channel axis: {in_shape} -> {out_shape}")

    def rewrite_op(self, op, node, args, kwargs):
        in_shape, out_shape = node.input_tensors[0].shape, node.output_tensors[0].shape
        kind = self._kind(in_shape, out_shape)
        newshape = list(op.newshape) if isinstance(op.newshape, (list, tuple)) else op.newshape
        if kind == "moves" or not isinstance(newshape, list) or newshape[-1] == -1:
            return fresh_op(op), args, kwargs  # -1 is inferred by Keras and stays valid
        new_in = args[0].shape
        newshape[-1] = new_in[-1] if kind == "keep" else registry._size(new_in[1:])
        return fresh_op(op, newshape=tuple(newshape)), args, kwargs


class AxesOp(OpRule):
    """transpose / moveaxis / swapaxes: channels pass through when the channel axis stays last."""

    @staticmethod
    def _permutation(op, rank):
        # Apply the op to a small array whose axis sizes name the axes, then read where they went.
        probe = np.empty(tuple(range(2, rank + 2)), dtype=np.int8)
        if hasattr(op, "axes"):
            moved = np.transpose(probe, op.axes)
        elif hasattr(op, "source"):
            moved = np.moveaxis(probe, op.source, op.destination)
        else:
            moved = np.swapaxes(probe, op.axis1, op.axis2)
        return [size - 2 for size in moved.shape]

    def connect(self, graph, call):
        _rank_check(call)
        rank = len(call.in_shapes[0])
        perm = self._permutation(call.layer, rank)
        if perm[-1] == rank - 1:
            return [call.in_layouts[0]]
        return _fixed(graph, call, f"moves the channel axis (axes {perm})")


class ExpandDimsOp(OpRule):
    """``ops.expand_dims``: a new axis before the channels passes them through; a new last axis moves them."""

    def connect(self, graph, call):
        _rank_check(call)
        out_rank = len(call.out_shapes[0])
        if out_rank - 1 in _axes(call.layer.axis, out_rank):
            return _fixed(graph, call, "adds an axis after the channel axis")
        return [call.in_layouts[0]]


class SqueezeOp(OpRule):
    """``ops.squeeze``: removing size-1 spatial axes passes channels through; squeezing the channel axis
    (width 1) keeps it fixed."""

    def connect(self, graph, call):
        _rank_check(call)
        in_shape = call.in_shapes[0]
        rank = len(in_shape)
        axis = call.layer.axis
        squeezed = in_shape[-1] == 1 if axis is None else rank - 1 in _axes(axis, rank)
        if squeezed:
            return _fixed(graph, call, "squeezes the channel axis")
        return [call.in_layouts[0]]


class SliceOp(OpRule):
    """``ops.slice(x, start_indices, shape)``: taking every channel passes them through (its ``shape`` is
    rewritten); a sub-range of channels keeps its input width fixed."""

    @staticmethod
    def _start(arguments):
        if len(arguments.args) > 1:
            return arguments.args[1]
        return arguments.kwargs.get("start_indices")

    def _all_channels(self, op, start, width):
        if isinstance(start, keras.KerasTensor) or start is None:
            return False
        return int(start[-1]) == 0 and op.shape[-1] in (-1, width)

    def connect(self, graph, call):
        _rank_check(call)
        op, width = call.layer, call.in_shapes[0][-1]
        start = self._start(call.arguments)
        if self._all_channels(op, start, width):
            return [call.in_layouts[0]]
        return _fixed(graph, call, f"slices channels (start {start}, shape {tuple(op.shape)}) of {width}")

    def rewrite_op(self, op, node, args, kwargs):
        if op.shape[-1] == -1 or not self._all_channels(op, self._start(node.arguments),
                                                        node.input_tensors[0].shape[-1]):
            return fresh_op(op), args, kwargs
        shape = list(op.shape)
        shape[-1] = args[0].shape[-1]
        return fresh_op(op, shape=tuple(shape)), args, kwargs


def _channel_entry(key, rank):
    """Where ``x[key]`` indexes the channel axis: (entry index or None when untouched, whether an axis is
    added after the channels, whether the key is static)."""
    entries = list(key) if isinstance(key, (tuple, list)) else [key]
    static = all(k is None or k is Ellipsis or isinstance(k, (int, slice)) for k in entries)
    consuming = [i for i, k in enumerate(entries) if k is not None and k is not Ellipsis]
    ellipsis = next((i for i, k in enumerate(entries) if k is Ellipsis), None)
    if ellipsis is not None:
        after = [i for i in consuming if i > ellipsis]
        entry = after[-1] if after else None
    else:
        entry = consuming[rank - 1] if len(consuming) >= rank else None
    last_axis = entry if entry is not None else (ellipsis if ellipsis is not None else -1)
    added_after = last_axis >= 0 and any(k is None for k in entries[last_axis + 1:])
    if ellipsis is None and entry is None:
        added_after = False  # implicit trailing axes (channels included) follow the key's new axes
    return entry, added_after, static


class GetItemOp(OpRule):
    """``x[key]``: keys that leave the channel axis whole (``x[:, 1:, 1:, :]``) pass channels through; an
    index or a sub-range of channels (``x[..., a:b]``) keeps its input width fixed."""

    @staticmethod
    def _key(arguments):
        return arguments.args[1] if len(arguments.args) > 1 else arguments.kwargs.get("key")

    def _classify(self, key, in_shape):
        entry, added_after, static = _channel_entry(key, len(in_shape))
        if not static:
            return "fixed", entry, "indexes with a tensor"
        if added_after:
            return "fixed", entry, "adds an axis after the channel axis"
        if entry is None:
            return "keep", None, ""
        k = (list(key) if isinstance(key, (tuple, list)) else [key])[entry]
        if isinstance(k, slice) and k.indices(in_shape[-1]) == (0, in_shape[-1], 1):
            return "keep", entry, ""
        return "fixed", entry, f"selects channels [{_key_text(k)}] of {in_shape[-1]}"

    def connect(self, graph, call):
        _rank_check(call)
        kind, _, reason = self._classify(self._key(call.arguments), call.in_shapes[0])
        if kind == "keep":
            return [call.in_layouts[0]]
        return _fixed(graph, call, reason)

    def rewrite_op(self, op, node, args, kwargs):
        key = self._key(node.arguments)
        kind, entry, _ = self._classify(key, node.input_tensors[0].shape)
        if kind == "keep" and entry is not None:
            # A full slice written with bounds (x[..., 0:C]) becomes x[..., :] at the new width.
            entries = list(key) if isinstance(key, (tuple, list)) else [key]
            entries[entry] = slice(None)
            args = (args[0], tuple(entries), *args[2:]) if len(args) > 1 else args
            if len(node.arguments.args) <= 1:
                kwargs = {**kwargs, "key": tuple(entries)}
        return fresh_op(op), args, kwargs


def _key_text(k):
    if isinstance(k, slice):
        return ":".join("" if v is None else str(v) for v in (k.start, k.stop)) + (
            "" if k.step is None else f":{k.step}")
    return str(k)


class RefusedOp(OpRule):
    """An op tf_precrop cannot follow or count; the message says why and what to use instead."""

    def __init__(self, reason):
        self.reason = reason

    def connect(self, graph, call):
        raise ValueError(f"{describe(call.layer, call.path)} is not supported: {self.reason}")


_ELEMENTWISE = {
    "numpy": [
        # unary math
        "Abs", "Absolute", "Fabs", "Exp", "Exp2", "Expm1", "Log", "Log10", "Log1p", "Log2", "Sqrt", "Cbrt",
        "Square", "Reciprocal", "Negative", "Sign", "Tanh", "Sin", "Cos", "Tan", "Sinh", "Cosh", "Floor",
        "Ceil", "Round", "Trunc", "Clip", "NanToNum", "Copy", "ZerosLike", "OnesLike", "FullLike", "Isnan",
        "Isinf", "Isfinite", "LogicalNot",
        # binary, broadcasting
        "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "DivideNoNan", "FloorDivide", "Mod", "Power",
        "Maximum", "Minimum", "Fmax", "Fmin", "Where", "Greater", "GreaterEqual", "Less", "LessEqual", "Equal",
        "NotEqual", "LogicalAnd", "LogicalOr", "LogicalXor", "Logaddexp", "Arctan2", "Hypot", "Heaviside",
    ],
    "nn": [
        "Relu", "Relu6", "Sigmoid", "Silu", "HardSigmoid", "HardSilu", "Gelu", "Elu", "Selu", "Celu",
        "LeakyRelu", "Softplus", "Softsign", "LogSigmoid", "HardTanh", "HardShrink", "SoftShrink",
        "TanhShrink", "Threshold", "Squareplus", "SparsePlus", "SparseSigmoid", "Mish",
        # normalise along an axis: the shape is kept, channels pass through at any width
        "Softmax", "LogSoftmax", "Sparsemax", "Normalize",
    ],
    "core": ["Cast", "SaturateCast", "StopGradient"],
    "math": ["Erf", "Erfc", "Rsqrt"],
}
_SPATIAL = {
    "nn": ["MaxPool", "AveragePool", "AdaptiveAveragePool", "AdaptiveMaxPool"],
    "image": ["Resize", "PadImages", "CropImages"],
}
_REDUCE = {
    "numpy": ["Mean", "Max", "Min", "Sum", "Prod", "Amax", "Amin", "Std", "Var", "Median", "Any", "All"],
    "math": ["Logsumexp"],
}
_KERNEL_ARGUMENT = (
    "its kernel is a call argument, not a layer weight, so tf_precrop can neither count its cost nor resize "
    "it. Use a layer that owns its kernel (keras.layers.{layer})."
)
_REFUSED = {
    "nn": {"Conv": "Conv2D", "DepthwiseConv": "DepthwiseConv2D", "SeparableConv": "SeparableConv2D",
           "ConvTranspose": "Conv2DTranspose"},
    "numpy": {"Matmul": "Dense", "Dot": "Dense", "Einsum": "EinsumDense", "Tensordot": "Dense"},
}


def op_registry() -> dict:
    """The keras.ops classes tf_precrop understands (or refuses with a reason), class -> rule."""
    from keras.src.ops import core, image, nn
    from keras.src.ops import math as kmath
    from keras.src.ops import numpy as knp

    modules = {"numpy": knp, "nn": nn, "core": core, "math": kmath, "image": image}
    table: dict = {}

    def add(groups, rule):
        for module, names in groups.items():
            for name in names:
                if hasattr(modules[module], name):  # the op list differs between Keras versions
                    table[getattr(modules[module], name)] = rule

    add(_ELEMENTWISE, ElementwiseOp())
    add(_SPATIAL, SpatialOp())
    add(_REDUCE, ReduceOp())
    add({"numpy": ["Transpose", "Moveaxis", "Swapaxes"]}, AxesOp())
    table[knp.Pad] = PadOp()
    table[knp.Concatenate] = ConcatOp()
    table[knp.Split] = SplitOp()
    table[knp.Reshape] = ReshapeOp()
    table[knp.ExpandDims] = ExpandDimsOp()
    table[knp.Squeeze] = SqueezeOp()
    table[knp.GetItem] = GetItemOp()
    table[core.Slice] = SliceOp()
    for module, refused in _REFUSED.items():
        for name, layer in refused.items():
            if hasattr(modules[module], name):
                table[getattr(modules[module], name)] = RefusedOp(_KERNEL_ARGUMENT.format(layer=layer))
    return table


#: What ``register_layer`` accepts by name for a keras.Operation subclass (an op has no kernel of its own).
NAMED_OP_RULES = {"passthrough": ElementwiseOp, "merge": ElementwiseOp, "fixed": registry.Fixed}


def rebuild_op(op, node, args, kwargs):
    """The op and call arguments of one op node in the rebuilt graph (``args`` hold the new tensors).

    An op without a rule (listed in ``ignored_layers``), or whose rule keeps it, is copied: calling the
    user's op object would add nodes to the user's graph. Only an op that cannot be serialized is reused.
    """
    rule = registry.rule_for(op)
    if rule is not None:
        op, args, kwargs = rule.rewrite_op(op, node, args, kwargs)
    return (fresh_op(op) if op is node.operation else op), args, kwargs

