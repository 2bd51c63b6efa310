"""Composite layers: custom blocks whose convolutions live inside ``call`` (docs/method.md, "Composite
layers and keras_hub").

A composite layer is one node of the functional graph, but it may hold several convolutions whose widths
come from a few config fields (``filters``, ``expansion``, ``se_ratio``...). A ``Composite`` rule declares

* the block's *named widths*: ``"in"`` (its input width), ``"out"`` (its output width) and inner widths
  (an expansion, a squeeze-excite bottleneck) with the step that keeps the block's own rounding formula
  exact (``adjust_channels`` returns any multiple of 8 unchanged);
* whether its structure depends on ``in == out`` (a residual added only when the widths match): then
  ``out`` is tied to ``in`` at its dense proportion, so a crop never drops (or adds) a skip connection;
* ``set_widths(config, widths)``: the config of the block at given named widths.

Its cost is measured, not declared: the block is probed (``tf_precrop.graph.probe``) at its dense widths
and once more with each free width doubled, rebuilt from ``set_widths``. Each sub-layer width is then an
exact linear combination of the named widths, and the sub-layers' own rules give MACs and params as
monomials of them, so the plan's cost of a block is exactly what the rebuilt block costs.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import json
from fractions import Fraction

from tf_precrop.graph import layout as layout_lib
from tf_precrop.graph import probe, registry

# (class, config, input shape) -> sub-call widths at perturbed widths: blocks repeat, probing is not free.
_PROBE_CACHE: dict = {}


@dataclasses.dataclass(frozen=True)
class Inner:
    """An inner width of a block: its dense value and the step its config formula keeps exact.

    ``of_input``: the width is this exact fraction of the block's input width (e.g. a squeeze-excite
    bottleneck ``int(in * 0.25)`` when ``in * 0.25`` is integral): it is tied to the input, which then moves in
    steps that keep it integral, and the block's ratio field stays as it is.
    """

    width: int
    step: int = 1
    of_input: Fraction | None = None


class Composite(registry.Rule, abc.ABC):
    """Rule of a composite custom layer, declared by its width fields; cost measured by probing.

    Subclasses implement ``widths``, ``set_widths`` and, when the block adds a residual only for equal
    widths, ``tied_output``.

    Example:
        >>> class MyBlockRule(Composite):
        ...     # MyBlock(filters, hidden): conv(in -> hidden), conv(hidden -> filters), + input if equal
        ...     def widths(self, config, in_width):
        ...         return config["filters"], {"hidden": Inner(config["hidden"])}
        ...     def tied_output(self, config):
        ...         return True
        ...     def set_widths(self, config, widths):
        ...         return {**config, "filters": widths["out"], "hidden": widths["hidden"]}
        >>> tf_precrop.register_layer(MyBlock, MyBlockRule())
    """

    composite = True
    produces_width = True

    @abc.abstractmethod
    def widths(self, config: dict, in_width: int) -> tuple:
        """``(out_width, {name: Inner})`` of the block at its config, given its input width."""

    @abc.abstractmethod
    def set_widths(self, config: dict, widths: dict) -> dict:
        """The config that builds the block at ``widths`` (``"in"``, ``"out"`` and every inner name)."""

    def tied_output(self, config: dict) -> bool:
        """Whether the block's structure depends on its output width equalling its input width."""
        return False

    # --- Rule interface -------------------------------------------------------------------------------
    def connect(self, graph, call):
        layer = call.layer
        config = layer.get_config()
        registry._check_channels_last(layer, config)
        if len(call.in_layouts) != 1:
            raise ValueError(f"Composite layer '{call.path}' ({type(layer).__name__}) must take one input tensor.")
        record = graph.record_of(call)
        if record.inner:  # a shared block called again: same widths
            return [record.inner["out"]]
        in_layout = call.in_layouts[0]
        in_width = call.in_shapes[0][-1]
        out_width, inner = self.widths(config, in_width)
        if out_width != call.out_shapes[0][-1]:
            raise ValueError(f"The rule of '{call.path}' ({type(layer).__name__}) declares output width "
                             f"{out_width}, but the layer outputs {call.out_shapes[0][-1]}.")
        if self.tied_output(config) and out_width == in_width:
            out = in_layout  # the block adds its input: one width
        elif self.tied_output(config):
            # Unequal widths add no residual; keeping their dense proportion keeps them unequal.
            gid = graph.producer_group(call, out_width)
            out = layout_lib.single(gid)
            if len(in_layout) == 1:
                seg = in_layout[0]
                graph.groups.tie(gid, seg.group, Fraction(out_width, in_width) * seg.mult, reason=call.path)
            else:
                graph.pin_layout(out, f"'{call.path}' must keep its output width unequal to its input width")
        else:
            out = layout_lib.single(graph.producer_group(call, out_width))
        record.inner["out"] = out
        for name, spec in inner.items():
            gid = graph.groups.new(spec.width, f"{call.path}:{name}")
            if spec.step > 1:
                graph.groups.require_multiple(gid, spec.step)
            if spec.of_input is not None:
                if len(in_layout) == 1:
                    graph.groups.tie(gid, in_layout[0].group, spec.of_input * in_layout[0].mult, reason=call.path)
                else:
                    graph.pin_layout(in_layout, f"'{call.path}' derives its '{name}' width from its input width")
                    graph.groups.pin(gid, f"'{call.path}' derives its '{name}' width from its input width")
            record.inner[name] = layout_lib.single(gid)
        return [out]

    def terms(self, graph, call, outs):
        layer = call.layer
        record = graph.record_of(call)
        in_layout, in_width = call.in_layouts[0], call.in_shapes[0][-1]
        config = layer.get_config()
        out_width, inner = self.widths(config, in_width)
        dense = {"in": in_width, "out": out_width, **{n: s.width for n, s in inner.items()}}
        # Widths that move together: "in" carries "out" when they are tied.
        tied = self.tied_output(config)
        follow_in = tuple(n for n, spec in inner.items() if spec.of_input is not None)
        variables = {"in": ("in", "out", *follow_in) if tied else ("in", *follow_in)}
        if not tied:
            variables["out"] = ("out",)
        variables.update({n: (n,) for n in inner if n not in follow_in})
        base_calls = probe.record_calls(layer, list(call.in_shapes))
        deltas = self._perturbed_widths(layer, config, dense, variables, tuple(call.in_shapes[0]), call.path)
        if any(len(d) != len(base_calls) for d in deltas.values()):
            raise ValueError(f"Composite layer '{call.path}' ({type(layer).__name__}) calls other sub-layers "
                             "when its widths change; its rule cannot describe it.")

        def layout(i, side, j):
            width = getattr(base_calls[i], side)[j][-1]
            segments, total = [], 0
            for var, calls in deltas.items():
                delta = calls[i][side][j] - width
                total += delta
                if not delta:
                    continue
                if var == "in":  # with "out" tied to it, a change of either is a multiple of the input's
                    segments.extend(layout_lib.scaled(in_layout, Fraction(delta, in_width)))
                else:
                    segments.extend(layout_lib.scaled(record.inner[var], Fraction(delta, dense[var])))
            if total != width:
                raise ValueError(
                    f"Sub-layer '{base_calls[i].layer.name}' of '{call.path}' ({type(layer).__name__}) has a width "
                    f"({width}) that is not proportional to the block's declared widths {dense}.")
            return tuple(segments)

        layouts = [([layout(i, "in_shapes", j) for j in range(len(c.in_shapes))],
                    [layout(i, "out_shapes", j) for j in range(len(c.out_shapes))]) for i, c in enumerate(base_calls)]
        terms = probe.leaf_terms(call.path, base_calls, layouts, first=call.first)
        if call.first:
            counted = sum(t.dense for t in terms if t.kind == registry.PARAMS)
            if counted != layer.count_params():
                raise ValueError(
                    f"Composite layer '{call.path}' ({type(layer).__name__}) has {layer.count_params()} params but "
                    f"its sub-layer calls hold {counted}: it uses weights outside its sub-layers.")
        return terms

    def _perturbed_widths(self, layer, config, dense, variables, in_shape, path) -> dict:
        """Per free width: the channel widths of every sub-call when that width is doubled (cached)."""
        key = (type(self), type(layer), json.dumps(config, sort_keys=True, default=repr), in_shape)
        if key not in _PROBE_CACHE:
            deltas = {}
            for var, names in variables.items():
                widths = {n: w * (2 if n in names else 1) for n, w in dense.items()}
                clone = type(layer).from_config(self.set_widths(copy.deepcopy(config), widths))
                calls = probe.record_calls(clone, [in_shape[:-1] + (widths["in"],)])
                deltas[var] = [{"in_shapes": [s[-1] for s in c.in_shapes], "out_shapes": [s[-1] for s in c.out_shapes]}
                               for c in calls]
            if len(_PROBE_CACHE) > 4096:
                _PROBE_CACHE.clear()
            _PROBE_CACHE[key] = deltas
        return _PROBE_CACHE[key]

    def rewrite(self, config, widths):
        named = {"in": widths.inputs[0], "out": widths.outputs[0], **(widths.inner or {})}
        return self.set_widths(config, named)


def ratio_for(target: int, base: int, formula) -> float:
    """A float ratio ``r`` with ``formula(base * r) == target`` (config fields such as ``se_ratio``).

    ``target / base`` can land a hair below ``target`` in floating point, which ``int()`` would floor;
    stepping to the next float up fixes it.

    Raises:
        ValueError: if no nearby float maps to ``target``.
    """
    import math

    ratio = target / base
    for _ in range(8):
        if formula(base * ratio) == target:
            return ratio
        ratio = math.nextafter(ratio, math.inf)
    raise ValueError(f"No ratio gives width {target} from {base}.")
