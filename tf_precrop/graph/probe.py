"""Probes a custom layer: which sub-layers its ``call`` runs, at which shapes (docs/method.md, "Ignored
layers still cost").

A composite layer (a custom layer that creates Keras layers in ``__init__``/``build`` and calls them in
``call``) is a single node of the functional graph, so the walk cannot see its convolutions. The probe runs
the layer's ``call`` symbolically (``keras``' own shape inference, any backend, no weights touched, no
profiler) while ``keras.layers.Layer.__call__`` is wrapped to record every *leaf* call: a call of a layer
class with a registered rule (Conv2D, BatchNormalization...). Layers without a rule (nested blocks,
Sequential branches) are descended into. The existing rules then count each leaf's MACs and params at its
recorded shapes.

Raw ``keras.ops`` inside ``call`` are not recorded: they carry no weights, so by the counting convention
of ``tf_precrop.cost`` (MACs are the multiply-accumulates of kernels) they cost no MACs. The one case that
cannot be known is a layer that multiplies *its own* matrix-shaped weight in a raw op (``ops.matmul(x,
self.w)``): the probe refuses it (see ``own_weights``).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref

import keras

# compute_output_spec: Keras' symbolic shape inference, on any backend.
from keras.src import backend as keras_backend
from keras.src.layers.layer import Layer as _BaseLayer

from tf_precrop.graph import registry

_LOCK = threading.Lock()
# layer -> {input shapes: calls}. A built layer's sub-layers do not change; count, plan and crop each walk the
# model, and a symbolic trace costs ~0.2 s per block on TensorFlow. Weak keys: the cache never keeps a model alive.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class SubCall:
    """One leaf sub-layer call seen inside a probed layer's ``call``."""

    layer: keras.layers.Layer
    in_shapes: list  # shapes of the tensor arguments, in order
    out_shapes: list
    first: bool  # first call of this sub-layer object inside the probe (its params count once)


class UnknownCostError(ValueError):
    """A layer's MACs cannot be known from its sub-layer calls."""


def _is_leaf(layer) -> bool:
    rule = registry.rule_for(layer)
    if rule is None:
        return type(layer) in _KNOWN_MACS
    return not getattr(rule, "composite", False)


def _einsum_macs(layer, in_shapes):
    """EinsumDense: one MAC per combination of every index of its equation (batch excluded)."""
    lhs = layer.equation.split("->")[0]
    x_spec, k_spec = lhs.split(",")
    shape = in_shapes[0]
    if "..." in x_spec:
        free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in layer.equation]
        dots = "".join(free[: len(shape) - (len(x_spec) - 3)])
        x_spec = x_spec.replace("...", dots)
    sizes = dict(zip(x_spec, shape))
    sizes.update(zip(k_spec, layer.kernel.shape))
    return int(math.prod(d for d in sizes.values() if d is not None))


def _rnn_macs(layer, in_shapes):
    """SimpleRNN / GRU / LSTM: every timestep multiplies the input by the kernel and the state by the
    recurrent kernel (all gates at once)."""
    cell = layer.cell
    steps = in_shapes[0][1]
    return int(steps * (math.prod(cell.kernel.shape) + math.prod(cell.recurrent_kernel.shape)))


# Weight layers without a channel rule whose MACs are still known (so that ignoring them is exact).
_KNOWN_MACS = {
    keras.layers.EinsumDense: _einsum_macs,
    keras.layers.SimpleRNN: _rnn_macs,
    keras.layers.GRU: _rnn_macs,
    keras.layers.LSTM: _rnn_macs,
}


def known_macs(layer, in_shapes) -> int | None:
    """MACs of a layer of a known kind without a channel rule (EinsumDense, SimpleRNN, GRU, LSTM), else None."""
    formula = _KNOWN_MACS.get(type(layer))
    if formula is None or (formula is _rnn_macs and in_shapes[0][1] is None):
        return None
    return formula(layer, in_shapes)


def _shapes(structure) -> list:
    # Unknown dims (None on TensorFlow, a symbolic batch dim on JAX) become None.
    return [tuple(int(d) if isinstance(d, int) else None for d in x.shape)
            for x in keras.tree.flatten(structure) if hasattr(x, "shape") and hasattr(x, "dtype")]


class _Recorder:
    def __init__(self):
        self.calls: list = []
        self.inside_leaf = False
        self.seen: set = set()


_state = threading.local()


def _recording_call(original):
    def __call__(self, *args, **kwargs):
        recorder = getattr(_state, "recorder", None)
        if recorder is None or recorder.inside_leaf or not _is_leaf(self) or any(
                isinstance(x, keras.KerasTensor) for x in keras.tree.flatten((args, kwargs))):
            # Symbolic calls on KerasTensors build nested models; they are not the probed call.
            return original(self, *args, **kwargs)
        recorder.inside_leaf = True
        try:
            outputs = original(self, *args, **kwargs)
        finally:
            recorder.inside_leaf = False
        first = id(self) not in recorder.seen
        recorder.seen.add(id(self))
        recorder.calls.append(SubCall(self, _shapes((args, kwargs)), _shapes(outputs), first))
        return outputs

    return __call__


def record_calls(layer, input_shapes: list) -> list:
    """Runs ``layer.call`` symbolically on inputs of the given shapes and returns its leaf sub-layer calls.

    Args:
        layer: a Keras layer (built or not; an unbuilt one, e.g. a fresh clone, is built by one symbolic call
            at these shapes).
        input_shapes: one shape per input tensor, batch axis included (None allowed).

    Returns:
        A list of ``SubCall`` in call order.

    Example:
        >>> calls = record_calls(my_block, [(None, 32, 32, 16)])
        >>> [(type(c.layer).__name__, c.out_shapes) for c in calls]
    """
    key = tuple(tuple(shape) for shape in input_shapes)
    if layer.built and key in _CACHE.get(layer, {}):
        return _CACHE[layer][key]
    specs = [keras.KerasTensor(shape, dtype=layer.compute_dtype) for shape in input_shapes]
    if not layer.built:
        # Build it as a model would, by a symbolic call (a fresh clone's sub-layers build on first use).
        layer(*specs)
    recorder = _Recorder()
    with _LOCK:
        original = _BaseLayer.__call__
        _BaseLayer.__call__ = _recording_call(original)
        _state.recorder = recorder
        try:
            keras_backend.compute_output_spec(layer.call, *specs)
        finally:
            _BaseLayer.__call__ = original
            _state.recorder = None
    _CACHE.setdefault(layer, {})[key] = recorder.calls
    return recorder.calls


def own_weights(layer, calls: list) -> list:
    """Weights of ``layer`` that no recorded sub-layer call owns (used by raw ops in its ``call``)."""
    covered = {id(w) for c in calls for w in c.layer.weights}
    return [w for w in layer.weights if id(w) not in covered]


def leaf_terms(path: str, calls: list, layouts=None, *, first: bool = True) -> list:
    """Cost terms of recorded sub-calls, from the sub-layers' own rules.

    Args:
        path: the probed layer's path; every term is booked to it.
        calls: ``SubCall`` list from ``record_calls``.
        layouts: per call, ``(input layouts, output layouts)`` in the enclosing graph's groups (None: every
            factor empty, i.e. the dense value at fixed widths).
        first: the probed layer's first call (sub-layer params count only then).

    Returns:
        ``registry.Term`` list; kernel names are prefixed with the sub-layer name so they stay distinct.
    """
    terms = []
    for i, sub in enumerate(calls):
        rule = registry.rule_for(sub.layer)
        if rule is None:
            raise ValueError(f"Sub-layer '{sub.layer.name}' of '{path}' ({type(sub.layer).__name__}) has no channel "
                             "rule: a composite rule cannot scale it.")
        ins, outs = layouts[i] if layouts else ([()] * len(sub.in_shapes), [()] * len(sub.out_shapes))
        call = registry.Call(layer=sub.layer, path=path, in_layouts=list(ins), in_shapes=sub.in_shapes,
                             out_shapes=sub.out_shapes, first=first and sub.first)
        for term in rule.terms(None, call, list(outs)):
            kernel = f"{sub.layer.name}/{term.kernel}" if term.kernel else None
            terms.append(dataclasses.replace(term, kernel=kernel))
    return terms


def fixed_terms(call: registry.Call) -> list:
    """MACs and params of a layer kept at its dense widths (ignored or ``"fixed"``), as constant terms.

    MACs come from probing its ``call``; params are ``count_params()``.

    Raises:
        UnknownCostError: if the layer owns a weight of rank >= 2 that no sub-layer call uses: it may
            multiply it in a raw op (a matmul) whose MACs the probe cannot see.
    """
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer):
        return []  # a stateless keras.ops node: no weights, no MACs
    params = int(layer.count_params()) if call.first else 0
    if not layer.weights:
        return []  # no kernel anywhere inside it, hence no MACs (and no params)
    known = known_macs(layer, call.in_shapes)
    if known is not None:
        calls, macs = [], known
    else:
        calls = record_calls(layer, [s for s in call.in_shapes])
        macs = sum(known_macs(c.layer, c.in_shapes) or 0 for c in calls if registry.rule_for(c.layer) is None)
    hidden = [w for w in own_weights(layer, calls) if len(w.shape) >= 2] if known is None else []
    if hidden:
        raise UnknownCostError(
            f"Layer '{call.path}' ({type(layer).__name__}) keeps its widths, but its MACs cannot be known: it "
            f"owns the weight(s) {[w.path for w in hidden]} and uses them outside any Keras sub-layer (e.g. "
            f"in a raw ops.matmul). Describe its cost with a tf_precrop.graph.registry.Rule whose terms() "
            f"return its MACs and register it: tf_precrop.register_layer({type(layer).__name__}, rule)."
        )
    ruled = [c for c in calls if registry.rule_for(c.layer) is not None]
    macs += sum(t.dense for t in leaf_terms(call.path, ruled) if t.kind == registry.MACS)
    terms = [registry.Term(registry.MACS, call.path, int(macs), ())] if macs else []
    if params:
        terms.append(registry.Term(registry.PARAMS, call.path, params, ()))
    return terms

