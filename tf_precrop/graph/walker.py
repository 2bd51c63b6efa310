"""Walks a Keras 3 functional graph (nested models included) and builds its channel groups."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import keras
from keras.src.models.functional import Functional

from tf_precrop.graph import layout as layout_lib
from tf_precrop.graph import op_rules, probe, registry
from tf_precrop.graph.groups import GroupSet
from tf_precrop.graph.layout import Layout


def functional_graph(model) -> Functional:
    """The functional graph behind a Functional or Sequential model.

    Raises:
        TypeError: if ``model`` is not a Keras 3 model.
        ValueError: if it is a subclassed model or an unbuilt Sequential model.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a Keras 3 `keras.Model` (functional or Sequential). Received: model of type "
            f"{type(model).__module__}.{type(model).__qualname__}"
        )
    if isinstance(model, keras.Sequential):
        # Keras keeps the graph of a built Sequential model in `_functional`.
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no known input shape. Start it with keras.Input(shape=...) "
                "so its graph can be read."
            )
        return functional
    if not isinstance(model, Functional):
        raise ValueError(
            f"Model '{model.name}' is a subclassed model (class {type(model).__name__}); its graph cannot be "
            "read. tf_precrop needs a functional or Sequential model."
        )
    return model


def node_of(tensor):
    history = tensor._keras_history
    return history.operation._inbound_nodes[history.node_index]


def topological_nodes(functional: Functional) -> list:
    """Nodes from inputs to outputs (iterative post-order DFS: deep nets exceed the recursion limit)."""
    order, visited = [], set()
    stack = [(node_of(t), False) for t in reversed(functional.outputs)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for tensor in reversed(node.input_tensors):
            stack.append((node_of(tensor), False))
    return order


@dataclasses.dataclass
class LayerRecord:
    """What the walk learned about one layer object (its first call)."""

    path: str
    layer: keras.layers.Layer
    rule: registry.Rule
    in_layouts: list
    out_layouts: list
    produced: int | None = None  # group id of the width the layer's config carries
    calls: int = 0
    inner: dict = dataclasses.field(default_factory=dict)  # composite layers: named width -> Layout


class ModelGraph:
    """Channel groups, layer records and cost terms of a model.

    Args:
        model: a Keras 3 functional or Sequential model (nested models allowed).
        ignored_layers: layer names (or nested paths "outer/inner") whose input and output widths stay
            fixed; also how unknown layers are accepted.
        custom_rules: ``{layer class: Rule}`` (see ``registry.resolve_rules``), consulted before the global
            registry.

    Raises:
        ValueError: naming every layer without a rule at once (after the whole walk), or for a graph it
            cannot follow.
    """

    def __init__(self, model, ignored_layers=(), custom_rules=None):
        self.model = model
        self.custom_rules = registry.resolve_rules(custom_rules)
        self._unknown: list = []  # (path, layer) without a rule, reported together after the walk
        self.groups = GroupSet()
        self.records: dict[str, LayerRecord] = {}
        self.terms: list[registry.Term] = []
        self._ignored = set(ignored_layers)
        self._matched_ignored: set = set()
        self._layouts: dict[int, Layout] = {}
        self._by_layer: dict[int, LayerRecord] = {}
        self._nested: dict[int, tuple] = {}
        self._cost_errors: list = []  # probe.UnknownCostError of fixed layers, raised after the walk
        functional = functional_graph(model)
        _check_static_inputs(functional)
        inputs = [self._input_layout(t, f"input '{t._keras_history.operation.name}'") for t in functional.inputs]
        try:
            outputs = self._walk(functional, "", inputs)
        except (ValueError, TypeError, AttributeError) as err:
            if self._unknown:  # a graph past an unknown layer may not make sense: name the unknown ones
                raise ValueError(unknown_layers_message(self._unknown)) from err
            raise
        for lay in outputs:
            self.pin_layout(lay, "model output")
        if self._unknown:
            raise ValueError(unknown_layers_message(self._unknown))
        unknown = sorted(self._ignored - self._matched_ignored)
        if unknown:
            raise ValueError(f"`ignored_layers` names layers that are not in the model. Received: {unknown}")
        if self._cost_errors:
            # After the walk, so that errors about unknown layers (which have no cost either) come first.
            raise self._cost_errors[0]

    # --- The walk -------------------------------------------------------------------------------------
    def _input_layout(self, tensor, origin):
        return layout_lib.single(self.groups.new(tensor.shape[-1], origin, pin="network input"))

    def _walk(self, functional: Functional, prefix: str, input_layouts: list) -> list:
        for tensor, lay in zip(functional.inputs, input_layouts):
            self._layouts[id(tensor)] = lay
        for node in topological_nodes(functional):
            op = node.operation
            if isinstance(op, keras.layers.InputLayer):
                continue
            in_layouts = [self._layouts[id(t)] for t in node.input_tensors]
            if isinstance(op, keras.Model):
                outs = self._walk_nested(op, prefix + op.name, in_layouts)
            else:
                outs = self._call(op, prefix + op.name, node, in_layouts)
            for tensor, lay in zip(node.output_tensors, outs):
                self._layouts[id(tensor)] = lay
        return [self._layouts[id(t)] for t in functional.outputs]

    def _walk_nested(self, model, path, in_layouts):
        key = id(model)
        if key not in self._nested:
            inner = functional_graph(model)
            outs = self._walk(inner, path + "/", in_layouts)
            self._nested[key] = (in_layouts, outs)
            return outs
        # A nested model called again shares its layers, hence its widths.
        first_ins, outs = self._nested[key]
        for a, b in zip(first_ins, in_layouts):
            self.tie_layouts(a, b, path)
        return outs

    def _call(self, layer, path, node, in_layouts):
        rule = registry.rule_for(layer, self.custom_rules)
        ignored = self._is_ignored(layer, path)
        unknown = rule is None and not ignored
        if unknown:
            # Walk on with fixed widths so that one error can name every unknown layer of the model.
            if id(layer) not in {id(seen) for _, seen in self._unknown}:
                self._unknown.append((path, layer))
            rule = registry.Fixed("no rule")
        if ignored and getattr(rule, "composite", False):
            rule = None  # an ignored composite block keeps its inner widths too: cost it as fixed
        rule = rule or registry.Fixed("listed in ignored_layers")
        record = self._by_layer.get(id(layer))
        first = record is None
        if first:
            record = LayerRecord(path, layer, rule, list(in_layouts), [])
            self.records[path] = record
            self._by_layer[id(layer)] = record
        elif getattr(layer, "weights", None):
            # A shared layer's weights fix its input width across calls.
            for a, b in zip(record.in_layouts, in_layouts):
                self.tie_layouts(a, b, path)
        call = registry.Call(
            layer=layer,
            path=record.path,
            in_layouts=in_layouts,
            in_shapes=[tuple(t.shape) for t in node.input_tensors],
            out_shapes=[tuple(t.shape) for t in node.output_tensors],
            first=first,
            arguments=node.arguments,
        )
        outs = rule.connect(self, call)
        if ignored:
            for lay in list(in_layouts) + list(outs):
                self.pin_layout(lay, f"'{path}' is listed in ignored_layers")
        for lay, shape in zip(outs, call.out_shapes):
            traced = layout_lib.width(lay, self.groups.dense_width)
            if traced != shape[-1]:
                raise ValueError(
                    f"tf_precrop cannot follow the channels through layer '{path}' ({type(layer).__name__}): "
                    f"traced width {traced}, actual {shape[-1]}. Pass ignored_layers=['{layer.name}'] or "
                    "register a rule for it."
                )
        try:
            terms = [] if unknown else rule.terms(self, call, outs)
        except probe.UnknownCostError as err:
            self._cost_errors.append(err)
            terms = []
        self.terms.extend(terms)
        if any(t.kind == registry.MACS for t in terms):
            self.terms.extend(_traffic_terms(call, outs))
        if first:
            record.out_layouts = list(outs)
        record.calls += 1
        return outs

    def _is_ignored(self, layer, path):
        for name in (path, layer.name):
            if name in self._ignored:
                self._matched_ignored.add(name)
                return True
        return False

    def is_fixed(self, record: LayerRecord) -> bool:
        """The layer keeps every width (ignored, or a "fixed" rule); its cost still counts."""
        return isinstance(record.rule, registry.Fixed) or bool(
            {record.path, record.layer.name} & self._matched_ignored)

    # --- What rules may ask of the graph ---------------------------------------------------------------
    def record_of(self, call) -> LayerRecord:
        """The record of a call's layer object (composite rules keep their inner widths in it)."""
        return self._by_layer[id(call.layer)]

    def producer_group(self, call, width) -> int:
        """The group a width-carrying layer produces (one per layer object, shared across calls)."""
        record = self._by_layer[id(call.layer)]
        if record.produced is None:
            record.produced = self.groups.new(width, call.path)
        return record.produced

    def tie_layouts(self, a: Layout, b: Layout, path: str) -> None:
        """Requires two layouts to keep equal widths.

        Aligned layouts (same segments, same dense widths) tie segment by segment. Otherwise (an Add or a
        squeeze-excite gate over a concatenation, say) every segment on both sides is tied to one shared
        ratio, which keeps the sums equal for any width.
        """
        dense = self.groups.dense_width
        reason = f"contradictory width ties at '{path}'"
        aligned = len(a) == len(b) and all(
            sa.mult * dense(sa.group) == sb.mult * dense(sb.group) for sa, sb in zip(a, b)
        )
        if aligned:
            for sa, sb in zip(a, b):
                self.groups.tie(sa.group, sb.group, Fraction(sb.mult) / Fraction(sa.mult), reason=reason)
            return
        if layout_lib.width(a, dense) != layout_lib.width(b, dense):
            reason = f"'{path}' joins tensors of different widths"
            self.pin_layout(a, reason)
            self.pin_layout(b, reason)
            return
        ref = a[0].group
        for seg in (*a, *b):
            self.groups.tie(seg.group, ref, Fraction(dense(seg.group), dense(ref)), reason=reason)

    def layout_of(self, tensor) -> Layout:
        """The channel layout the walk gave a tensor of the model (nested models' tensors included)."""
        return self._layouts[id(tensor)]

    def pin_layout(self, lay: Layout, reason: str) -> None:
        for seg in lay:
            self.groups.pin(seg.group, reason)

    def fixed_layout(self, call, width, index=0) -> Layout:
        return layout_lib.single(self.groups.new(width, f"{call.path}:{index}", pin=f"output of '{call.path}'"))

    def require_multiple(self, lay: Layout, multiple: int, path: str) -> None:
        """Keeps a layout's width divisible by ``multiple`` (grouped convs): each segment stays a multiple."""
        dense = self.groups.dense_width
        if any((seg.mult * dense(seg.group)) % multiple for seg in lay):
            self.pin_layout(lay, f"'{path}' needs a width divisible by {multiple} over concatenated inputs")
            return
        for seg in lay:
            self.groups.require_multiple(seg.group, multiple, scale=seg.mult)


def unknown_layers_message(unknown: list) -> str:
    """One error for every layer without a rule, ``unknown`` being (path, layer) pairs in graph order."""
    names = ", ".join(op_rules.describe(layer, path, short=True) for path, layer in unknown)
    classes = list(dict.fromkeys(op_rules.class_path(layer) for _, layer in unknown))
    rules = ", ".join(f"{c}: rule" for c in classes)
    paths = [path for path, _ in unknown]
    if len(unknown) == 1:
        path, layer = unknown[0]
        head = f"{op_rules.describe(layer, path)} is not supported: tf_precrop cannot tell how it treats channels."
        its, whose = "its", "its class a rule"
    else:
        head = (f"{len(unknown)} layers are not supported: {names}. tf_precrop cannot tell how they treat "
                "channels.")
        its, whose = "their", "their classes rules"
    return (
        f"{head} Pass ignored_layers={paths!r} to keep {its} input and output widths fixed, or give {whose}: "
        f"custom_rules={{{rules}}} or tf_precrop.register_layer({classes[0]}, rule)."
    )


def _check_static_inputs(functional):
    for tensor in functional.inputs:
        shape = tuple(tensor.shape)
        if any(d is None for d in shape[1:]):
            name = tensor._keras_history.operation.name
            raise ValueError(
                f"Input '{name}' has unknown dimensions: shape={shape}. MACs depend on the spatial size: build "
                "the model with a fixed input shape, e.g. input_shape=(224, 224, 3)."
            )


def _traffic_terms(call: registry.Call, outs: list) -> list:
    """What a kernel op (conv, dense...) moves besides its MACs: the tensors it reads and writes.

    Batch norm and activations fold into the op when exported (TFLite), so these tensors are the
    memory traffic the latency model charges per element.
    """
    terms = [registry.Term(registry.OPS, call.path, 1, ())]
    for lay, shape in zip(list(call.in_layouts) + list(outs), list(call.in_shapes) + list(call.out_shapes)):
        terms.append(registry.Term(registry.ACTIVATIONS, call.path, math.prod(shape[1:]), (lay,)))
    return terms
