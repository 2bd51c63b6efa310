"""How each layer class treats channels: the rule registry.

A rule answers three questions about a layer call, and nothing else in the package knows layer classes:

* ``connect``: the channel layouts of its outputs, given those of its inputs (tying or creating groups);
* ``terms``: its MACs and params as products of layout ratios (see ``tf_precrop.cost``);
* ``rewrite``: the config of the rebuilt layer, given the new widths.

Like TF-MOT's prune registry, the table maps layer classes to rules; ``register_layer`` extends it for
custom layers.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from fractions import Fraction
from typing import Callable

import keras

from tf_precrop.graph import layout as layout_lib
from tf_precrop.graph.layout import Layout

MACS = "macs"
PARAMS = "params"
# Memory-traffic terms of the latency model (tf_precrop.latency_model), one set per kernel-op call: the
# elements of every tensor it reads or writes, and one constant per op. Not MACs, not params.
ACTIVATIONS = "activations"
OPS = "ops"


@dataclasses.dataclass(frozen=True)
class Term:
    """One cost term: ``dense * prod(ratio(f) for f in factors)``.

    Attributes:
        kind: ``"macs"``, ``"params"``, ``"activations"`` (elements a kernel op reads or writes) or
            ``"ops"`` (1 per kernel-op call).
        layer: path of the layer the term belongs to.
        dense: the term's value in the dense model.
        factors: channel layouts whose width ratios multiply the dense value.
        kernel: name of the kernel variable for kernel-weight terms (these define the layer's density
            ``p_l`` in the objective), else None.
    """

    kind: str
    layer: str
    dense: int
    factors: tuple
    kernel: str | None = None


@dataclasses.dataclass
class Call:
    """One call of a layer in the graph, as the rules see it."""

    layer: keras.layers.Layer
    path: str
    in_layouts: list  # one Layout per input tensor
    in_shapes: list
    out_shapes: list
    first: bool  # first call of this layer object (params are counted once)
    arguments: object = None  # the node's call arguments (keras.ops keys, constants), for op rules


class Rule(abc.ABC):
    """How one layer class treats channels. Subclass it and override what differs; ``connect`` is required.

    ``connect`` returns the channel layout of each output given the inputs' (``call.in_layouts``), using the
    graph's helpers (``tie_layouts``, ``pin_layout``, ``producer_group``, ``fixed_layout``). ``terms`` lists
    the layer's MACs and params as ``Term``s (default: every weight whose last axis is the input channel
    axis scales with the input width). ``rewrite`` edits the layer's config for its new widths.

    Example: a custom layer that scales each channel by a learned gamma (output channels = input channels,
    its ``dim`` config field holds the width)::

        class ChannelScaleRule(tf_precrop.Rule):
            def connect(self, graph, call):
                return [call.in_layouts[0]]

            def rewrite(self, config, widths):
                config["dim"] = widths.outputs[0]
                return config

        tf_precrop.crop(model, flops=0.5, custom_rules={ChannelScale: ChannelScaleRule()})
    """

    #: The rule creates a new channel group for its output (its config carries a width).
    produces_width = False
    #: Copy the layer's weights into the rebuilt model (data statistics rather than initial values).
    keep_weights = False

    @abc.abstractmethod
    def connect(self, graph, call: Call) -> list:
        """The output layouts of ``call`` (one per output tensor), given ``call.in_layouts``."""

    def terms(self, graph, call: Call, outs: list) -> list:
        """Default: every weight whose last axis is the channel axis scales with the input layout."""
        if not call.first:
            return []
        return _per_channel_params(call, call.in_layouts[0] if call.in_layouts else ())

    def rewrite(self, config: dict, widths: "Widths") -> dict:
        return config

    def rewrite_op(self, op, node, args, kwargs):
        """A keras.ops node in the rebuilt graph: ``(op, args, kwargs)`` to call, ``args`` holding the new
        tensors. Op rules (tf_precrop.graph.op_rules) rewrite arguments that hold widths; default: reuse."""
        return op, args, kwargs


class Widths:
    """New widths of a rebuilt layer call: input and output layout widths."""

    def __init__(self, in_widths, out_widths, produced=None, inner=None):
        self.inputs = in_widths
        self.outputs = out_widths
        self.produced = produced  # width of the group this layer produces, if any
        self.inner = inner  # composite layers: named inner width -> new width


def _size(shape) -> int:
    return int(math.prod(shape))


def _positions(shape) -> int:
    """Positions an op is applied at: every axis but batch and channels."""
    return _size(shape[1:-1])


def _per_channel_params(call: Call, channels: Layout) -> list:
    width = call.in_shapes[0][-1] if call.in_shapes else None
    terms = []
    for w in getattr(call.layer, "weights", ()):
        size = _size(w.shape)
        factors = (channels,) if (len(w.shape) and w.shape[-1] == width and channels) else ()
        terms.append(Term(PARAMS, call.path, size, factors))
    return terms


def _check_channels_last(layer, config):
    if config.get("data_format") == "channels_first":
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses data_format='channels_first'. tf_precrop "
            "supports channels_last models only; rebuild the model with "
            "keras.config.set_image_data_format('channels_last')."
        )


class PassThrough(Rule):
    """Output channels are the input channels (BN, activations, pooling, padding, dropout...)."""

    def connect(self, graph, call):
        _check_channels_last(call.layer, call.layer.get_config())
        axis = call.layer.get_config().get("axis", -1)
        if isinstance(call.layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                                   keras.layers.GroupNormalization)):
            rank = len(call.in_shapes[0])
            axes = axis if isinstance(axis, (list, tuple)) else [axis]
            if (rank - 1) not in [a % rank for a in axes]:
                raise ValueError(
                    f"Layer '{call.layer.name}' ({type(call.layer).__name__}) normalizes over axis={axis}, "
                    "not the channel axis (-1). tf_precrop supports channels_last models only."
                )
        if isinstance(call.layer, keras.layers.GroupNormalization):
            graph.require_multiple(call.in_layouts[0], call.layer.groups, call.path)
        return [call.in_layouts[0]]


class KeepInput(PassThrough):
    """Passes channels through but keeps its input width (its weights are data, e.g. Normalization)."""

    keep_weights = True

    def connect(self, graph, call):
        graph.pin_layout(call.in_layouts[0], f"'{call.path}' holds per-channel statistics of the data")
        return super().connect(graph, call)


class Merge(Rule):
    """Element-wise ops (Add, Multiply, ...): all inputs share one layout, broadcast inputs excepted."""

    def connect(self, graph, call):
        full = [(lay, shape) for lay, shape in zip(call.in_layouts, call.in_shapes) if shape[-1] != 1]
        if not full:
            return [call.in_layouts[0]]
        first = full[0][0]
        for lay, shape in zip(call.in_layouts, call.in_shapes):
            if shape[-1] == 1 and full[0][1][-1] != 1:
                # A (…, 1) operand broadcasts over channels: its width must stay 1.
                graph.pin_layout(lay, f"broadcast operand of '{call.path}'")
            elif lay is not first:
                graph.tie_layouts(first, lay, call.path)
        return [first]

    def terms(self, graph, call, outs):
        return []


class Concat(Rule):
    """Concatenate along channels makes a composite layout; along another axis it ties like a merge."""

    def connect(self, graph, call):
        rank = len(call.out_shapes[0])
        axis = call.layer.get_config().get("axis", -1) % rank
        if axis == rank - 1:
            return [tuple(seg for lay in call.in_layouts for seg in lay)]
        return Merge.connect(self, graph, call)

    def terms(self, graph, call, outs):
        return []


class Conv(Rule):
    """Conv1D/2D/3D (incl. grouped), Conv*Transpose and Dense: a new output group of ``filters``/``units``.

    A grouped conv whose ``groups`` equals its input width is a depthwise conv written as Conv2D (ConvNeXt):
    its output follows its input and ``groups`` is rewritten with the width.
    """

    produces_width = True
    width_key = "filters"

    def _depthwise_like(self, call):
        groups = call.layer.get_config().get("groups", 1)
        return groups > 1 and groups == call.in_shapes[0][-1]

    def connect(self, graph, call):
        layer = call.layer
        config = layer.get_config()
        _check_channels_last(layer, config)
        in_layout = call.in_layouts[0]
        out_width = call.out_shapes[0][-1]
        if self._depthwise_like(call):
            return [layout_lib.scaled(in_layout, Fraction(out_width, call.in_shapes[0][-1]))]
        group = graph.producer_group(call, out_width)
        groups = config.get("groups", 1)
        if groups > 1:
            graph.require_multiple(layout_lib.single(group), groups, call.path)
            graph.require_multiple(in_layout, groups, call.path)
        return [layout_lib.single(group)]

    def _mac_positions(self, call):
        return _positions(call.out_shapes[0])

    def terms(self, graph, call, outs):
        in_layout, out_layout = call.in_layouts[0], outs[0]
        factors = (in_layout,) if self._depthwise_like(call) else (in_layout, out_layout)
        kernel = call.layer.kernel
        terms = [Term(MACS, call.path, self._mac_positions(call) * _size(kernel.shape), factors, "kernel")]
        if call.first:
            for w in call.layer.weights:
                if w is kernel:
                    terms.append(Term(PARAMS, call.path, _size(w.shape), factors, "kernel"))
                else:  # bias
                    terms.append(Term(PARAMS, call.path, _size(w.shape), (out_layout,)))
        return terms

    def rewrite(self, config, widths):
        if widths.produced is None:  # depthwise-like grouped conv
            mult = config["filters"] // config["groups"]
            config["groups"] = widths.inputs[0]
            config["filters"] = widths.inputs[0] * mult
        else:
            config[self.width_key] = widths.produced
        return config


class DenseRule(Conv):
    width_key = "units"

    def _depthwise_like(self, call):
        return False


class ConvTranspose(Conv):
    """Transposed convs scatter each *input* position over the kernel: MACs count input positions."""

    def _mac_positions(self, call):
        return _positions(call.in_shapes[0])


class Depthwise(Rule):
    """DepthwiseConv1D/2D: output = input width x depth_multiplier, one term depending on the input."""

    def connect(self, graph, call):
        _check_channels_last(call.layer, call.layer.get_config())
        return [layout_lib.scaled(call.in_layouts[0], call.layer.depth_multiplier)]

    def terms(self, graph, call, outs):
        in_layout = call.in_layouts[0]
        kernel = call.layer.kernel
        terms = [Term(MACS, call.path, _positions(call.out_shapes[0]) * _size(kernel.shape), (in_layout,),
                      "kernel")]
        if call.first:
            for w in call.layer.weights:
                terms.append(Term(PARAMS, call.path, _size(w.shape), (in_layout,),
                                  "kernel" if w is kernel else None))
        return terms


class Separable(Rule):
    """SeparableConv1D/2D: a depthwise term (input) and a pointwise term (input x output)."""

    produces_width = True

    def connect(self, graph, call):
        _check_channels_last(call.layer, call.layer.get_config())
        return [layout_lib.single(graph.producer_group(call, call.out_shapes[0][-1]))]

    def terms(self, graph, call, outs):
        layer, in_layout, out_layout = call.layer, call.in_layouts[0], outs[0]
        pos = _positions(call.out_shapes[0])
        dw, pw = layer.depthwise_kernel, layer.pointwise_kernel
        terms = [
            Term(MACS, call.path, pos * _size(dw.shape), (in_layout,), "depthwise_kernel"),
            Term(MACS, call.path, pos * _size(pw.shape), (in_layout, out_layout), "pointwise_kernel"),
        ]
        if call.first:
            for w in layer.weights:
                if w is dw:
                    terms.append(Term(PARAMS, call.path, _size(w.shape), (in_layout,), "depthwise_kernel"))
                elif w is pw:
                    terms.append(Term(PARAMS, call.path, _size(w.shape), (in_layout, out_layout),
                                      "pointwise_kernel"))
                else:
                    terms.append(Term(PARAMS, call.path, _size(w.shape), (out_layout,)))
        return terms

    def rewrite(self, config, widths):
        config["filters"] = widths.produced
        return config


class Flatten(Rule):
    """Flatten repeats the channel layout once per spatial position (channels_last order)."""

    def connect(self, graph, call):
        _check_channels_last(call.layer, call.layer.get_config())
        return [layout_lib.scaled(call.in_layouts[0], _positions(call.in_shapes[0]))]

    def terms(self, graph, call, outs):
        return []


class Reshape(Rule):
    """Reshape keeping the channel axis last (squeeze-excite's (1, 1, C)) is rewritten with the new width;
    a reshape to one axis acts as Flatten; any other reshape keeps its input width fixed."""

    def connect(self, graph, call):
        in_shape, out_shape = call.in_shapes[0], call.out_shapes[0]
        if in_shape[-1] == out_shape[-1] and _positions(in_shape) == _positions(out_shape):
            return [call.in_layouts[0]]
        if len(out_shape) == 2:
            return Flatten.connect(self, graph, call)
        graph.pin_layout(call.in_layouts[0], f"'{call.path}' reshapes the channel axis")
        return [graph.fixed_layout(call, out_shape[-1])]

    def terms(self, graph, call, outs):
        return []

    def rewrite(self, config, widths):
        target = list(config["target_shape"])
        if target[-1] != -1:  # -1 is inferred by Keras and stays valid
            target[-1] = widths.outputs[0]
        config["target_shape"] = tuple(target)
        return config


class Fixed(Rule):
    """Layers we understand only as 'keep every width': inputs and outputs stay at their dense width."""

    def __init__(self, reason="its input and output widths are kept"):
        self.reason = reason

    def connect(self, graph, call):
        for lay in call.in_layouts:
            graph.pin_layout(lay, f"'{call.path}': {self.reason}")
        return [graph.fixed_layout(call, shape[-1], index=i) for i, shape in enumerate(call.out_shapes)]

    def terms(self, graph, call, outs):
        # Fixed widths do not mean free: its kernels' MACs at the dense widths still count (docs/method.md,
        # "Ignored layers still cost").
        from tf_precrop.graph import probe

        return probe.fixed_terms(call)


class LayerScale(PassThrough):
    """ConvNeXt's LayerScale: per-channel gamma; its config stores the width as ``projection_dim``."""

    def rewrite(self, config, widths):
        config["projection_dim"] = widths.outputs[0]
        return config


class ScaleAdd(Merge):
    """InceptionResNetV2's CustomScaleLayer computes ``x + scale * r``: it ties like Add."""


_PASS_THROUGH = [
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Identity", "ActivityRegularization",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Rescaling", "Resizing", "CenterCrop", "RandomFlip", "RandomCrop", "RandomRotation", "RandomZoom",
    "RandomTranslation", "RandomContrast", "RandomBrightness",
]
_MERGE = ["Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"]


def _default_registry() -> dict:
    table: dict = {}
    for name in _PASS_THROUGH:
        if hasattr(keras.layers, name):
            table[getattr(keras.layers, name)] = PassThrough()
    for name in _MERGE:
        table[getattr(keras.layers, name)] = Merge()
    table[keras.layers.Normalization] = KeepInput()
    table[keras.layers.Concatenate] = Concat()
    for name in ("Conv1D", "Conv2D", "Conv3D"):
        table[getattr(keras.layers, name)] = Conv()
    for name in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        table[getattr(keras.layers, name)] = ConvTranspose()
    table[keras.layers.Dense] = DenseRule()
    table[keras.layers.DepthwiseConv1D] = Depthwise()
    table[keras.layers.DepthwiseConv2D] = Depthwise()
    table[keras.layers.SeparableConv1D] = Separable()
    table[keras.layers.SeparableConv2D] = Separable()
    table[keras.layers.Flatten] = Flatten()
    table[keras.layers.Reshape] = Reshape()
    table[keras.layers.Permute] = Fixed("it permutes axes")
    table[keras.layers.RepeatVector] = Fixed("it repeats its input")
    # keras.applications brings two custom layers of its own.
    from keras.src.applications import convnext, inception_resnet_v2

    # `a + b` on Keras tensors records a stateless op (keras.src.ops.numpy.Add) rather than a layer.
    from keras.src.ops import numpy as knp

    for name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Divide", "TrueDivide"):
        if hasattr(knp, name):
            table[getattr(knp, name)] = Merge()
    table[convnext.LayerScale] = LayerScale()
    table[inception_resnet_v2.CustomScaleLayer] = ScaleAdd()
    return table


REGISTRY: dict = _default_registry()

_NAMED_RULES: dict[str, Callable[[], Rule]] = {
    "passthrough": PassThrough,
    "merge": Merge,
    "fixed": Fixed,
    "conv": Conv,
    "dense": DenseRule,
    "depthwise": Depthwise,
}


def _as_rule(layer_class, rule) -> Rule:
    """Checks a (layer class, rule name or Rule) pair as ``register_layer`` and ``custom_rules`` take it."""
    if not (isinstance(layer_class, type) and issubclass(layer_class, (keras.layers.Layer, keras.Operation))):
        raise TypeError(
            "`layer_class` must be a keras.layers.Layer or keras.Operation subclass. Received: "
            f"layer_class={layer_class!r}"
        )
    if isinstance(rule, str) and not issubclass(layer_class, keras.layers.Layer):
        from tf_precrop.graph import op_rules

        if rule not in op_rules.NAMED_OP_RULES:
            raise ValueError(
                f"{layer_class.__name__} is a keras.Operation (no weights of its own): allowed rules are "
                f"{sorted(op_rules.NAMED_OP_RULES)} or a Rule instance. Received: rule={rule!r}"
            )
        rule = op_rules.NAMED_OP_RULES[rule]()
    if isinstance(rule, str):
        if rule not in _NAMED_RULES:
            raise ValueError(
                f"Unknown rule {rule!r}. Allowed: {sorted(_NAMED_RULES)} or a Rule instance. Received: rule={rule!r}"
            )
        rule = _NAMED_RULES[rule]()
    if not isinstance(rule, Rule):
        raise TypeError(f"`rule` must be a rule name or a Rule instance. Received: rule={rule!r}")
    return rule


def register_layer(layer_class: type, rule) -> None:
    """Tells tf_precrop, for every later call, how a custom layer class treats channels.

    ``custom_rules={layer_class: rule}`` on ``count``/``plan``/``crop``/``preconfig`` does the same for one
    call without changing global state.

    Args:
        layer_class: a ``keras.layers.Layer`` subclass, or a ``keras.Operation`` subclass (a keras.ops op
            recorded in a functional graph, e.g. ``keras.src.ops.numpy.Pad``; for ops the named rules are
            ``"passthrough"``, ``"merge"`` and ``"fixed"``).
        rule: one of ``"passthrough"`` (output channels are the input channels; per-channel weights scale),
            ``"merge"`` (element-wise op over inputs of equal width), ``"fixed"`` (keep its input and output
            widths), ``"conv"`` / ``"dense"`` (produces ``filters`` / ``units`` channels from a ``kernel``),
            ``"depthwise"``, or a ``tf_precrop.Rule`` instance.

    Raises:
        TypeError: if ``layer_class`` is not a Keras layer class or ``rule`` is not a rule.
        ValueError: if ``rule`` is an unknown rule name.

    Example:
        >>> tf_precrop.register_layer(MyScale, "passthrough")
    """
    REGISTRY[layer_class] = _as_rule(layer_class, rule)


def resolve_rules(custom_rules) -> dict:
    """Checks a ``custom_rules`` argument and returns it as ``{layer class: Rule}`` (empty for None).

    Raises:
        TypeError: if it is not a dict, or a key or value is not a layer class or rule.
        ValueError: if a value is an unknown rule name.
    """
    if custom_rules is None:
        return {}
    if not isinstance(custom_rules, dict):
        raise TypeError(
            "`custom_rules` must be a dict {layer class: rule name or tf_precrop.Rule}. Received: "
            f"custom_rules={custom_rules!r}"
        )
    return {cls: _as_rule(cls, rule) for cls, rule in custom_rules.items()}


def rule_for(layer, custom_rules=None) -> Rule | None:
    """The rule of a layer's exact class (subclasses may change what channels do): ``custom_rules`` (a
    ``resolve_rules`` dict) first, then the global registry."""
    if custom_rules:
        rule = custom_rules.get(type(layer))
        if rule is not None:
            return rule
    rule = REGISTRY.get(type(layer))
    if rule is None and type(layer).__module__.startswith("keras_hub."):
        _load_keras_hub_rules()
        rule = REGISTRY.get(type(layer))
    return rule


_KERAS_HUB_LOADED = False


def _load_keras_hub_rules():
    """Registers the keras_hub block rules the first time a keras_hub layer is met (keras_hub is optional)."""
    global _KERAS_HUB_LOADED
    if _KERAS_HUB_LOADED:
        return
    _KERAS_HUB_LOADED = True
    from tf_precrop.graph import keras_hub_rules

    for layer_class, rule in keras_hub_rules.rules().items():
        REGISTRY.setdefault(layer_class, rule)


def supports(layer_or_class, custom_rules=None) -> bool:
    """Whether tf_precrop understands a layer (a rule is registered for its exact class).

    A layer it does not understand must be listed in ``ignored_layers`` (its widths stay fixed) or given a
    rule (``custom_rules`` or ``register_layer``). docs/layers.md lists every ``keras.layers`` class.

    Args:
        layer_or_class: a Keras layer (or keras.ops operation) instance or class.
        custom_rules: optional per-call rules, as passed to ``crop``.

    Returns:
        True if a rule is registered for the exact class.

    Raises:
        TypeError: if ``layer_or_class`` is neither a Keras layer nor a layer class.

    Example:
        >>> tf_precrop.supports(keras.layers.Conv2D), tf_precrop.supports(keras.layers.LSTM)
        (True, False)
    """
    cls = layer_or_class if isinstance(layer_or_class, type) else type(layer_or_class)
    if not issubclass(cls, (keras.layers.Layer, keras.Operation)):
        raise TypeError(
            "`layer_or_class` must be a Keras layer or layer class. Received: "
            f"layer_or_class={layer_or_class!r}"
        )
    if cls.__module__.startswith("keras_hub."):
        _load_keras_hub_rules()
    resolved = resolve_rules(custom_rules)
    return (resolved.get(cls) or REGISTRY.get(cls)) is not None


def support_kind(layer_class) -> str:
    """``"pass-through"`` (channels flow through unchanged), ``"supported"`` (another rule) or ``"refused"``
    (no rule: the layer must be ignored or given one), for the table in docs/layers.md."""
    rule = REGISTRY.get(layer_class)
    if rule is None:
        return "refused"
    return "pass-through" if type(rule) is PassThrough else "supported"


def _register_op_rules() -> None:
    # keras.ops nodes (pad, split, relu, mean...) have their own module of rules; see docs/method.md.
    from tf_precrop.graph import op_rules

    REGISTRY.update(op_rules.op_registry())


_register_op_rules()
