"""Property test: random small CNN graphs made of keras.ops nodes go through crop() and keep the plan.

A recipe is a tuple of blocks drawn by hypothesis and built at 12x12x3. Blocks: conv + an activation op,
spatial ``ops.pad`` then a valid conv, zero channel padding, a CSP-style equal split (one half convolved,
``ops.concatenate``), a split at an index, a residual ``x + conv(x)`` scaled by a scalar, a squeeze-excite
gate from ``ops.mean`` (keepdims, or a reshape back to (-1, 1, 1, C)), and a spatial max pool op. The head is
``ops.mean`` over the spatial axes and a Dense layer.
"""

import keras
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from keras import layers, ops

import tf_precrop

INPUT_SHAPE = (12, 12, 3)
NUM_CLASSES = 4
ACTIVATIONS = {
    "relu": ops.relu, "relu6": ops.relu6, "sigmoid": ops.sigmoid, "silu": ops.silu, "hard_silu": ops.hard_silu,
    "gelu": ops.gelu, "tanh": ops.tanh, "hard_sigmoid": ops.hard_sigmoid,
}
X = np.random.default_rng(0).random((2,) + INPUT_SHAPE, dtype=np.float32)


@st.composite
def recipes(draw, max_blocks=4):
    """Block specs with the dense width tracked, so every split is valid."""
    width = draw(st.sampled_from([8, 12, 16]))
    blocks = [("stem", width, draw(st.sampled_from(sorted(ACTIVATIONS))))]
    size = INPUT_SHAPE[0]
    for _ in range(draw(st.integers(1, max_blocks))):
        # Widths stay even (channel pads of 2 or 4), so an equal split is always valid.
        kinds = ["csp", "split_at", "conv", "pad", "chanpad", "res", "se", "se_reshape"]
        if size >= 6:
            kinds.append("pool")
        kind = draw(st.sampled_from(kinds))
        act = draw(st.sampled_from(sorted(ACTIVATIONS)))
        if kind == "conv":
            width = draw(st.sampled_from([8, 12, 16]))
            blocks.append((kind, width, act))
        elif kind == "chanpad":
            pad = draw(st.sampled_from([2, 4]))
            width += pad
            blocks.append((kind, pad, act))
        elif kind == "csp":
            half = draw(st.sampled_from([4, 8]))
            blocks.append((kind, half, act))
            width = width // 2 + half
        elif kind == "split_at":
            index = draw(st.integers(1, width - 1))
            out = draw(st.sampled_from([4, 8]))
            blocks.append((kind, index, out))
            width = index + out  # the split-off first part and the convolved rest
        elif kind == "pool":
            size //= 2
            blocks.append((kind, 2, act))
        else:
            blocks.append((kind, draw(st.floats(0.25, 2.0)), act))
    return tuple(blocks)


def build(recipe) -> keras.Model:
    inputs = keras.Input(INPUT_SHAPE)
    x = inputs
    for kind, arg, act in recipe:
        if kind in ("stem", "conv"):
            x = ACTIVATIONS[act](layers.Conv2D(arg, 3, padding="same")(x))
        elif kind == "pad":
            x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            x = ACTIVATIONS[act](layers.Conv2D(x.shape[-1], 3)(x))
        elif kind == "chanpad":
            x = ops.pad(x, ((0, 0), (0, 0), (0, 0), (0, arg)))
        elif kind == "csp":
            a, b = ops.split(x, 2, axis=-1)
            b = ACTIVATIONS[act](layers.Conv2D(arg, 3, padding="same")(b))
            x = ops.concatenate([a, b], axis=-1)
        elif kind == "split_at":
            a, b = ops.split(x, [arg], axis=-1)
            x = ops.concatenate([layers.Conv2D(act, 1)(b), a], axis=-1)
        elif kind == "res":
            x = x + layers.Conv2D(x.shape[-1], 3, padding="same")(x) * arg
        elif kind in ("se", "se_reshape"):
            width = x.shape[-1]
            if kind == "se":
                s = ops.mean(x, axis=(1, 2), keepdims=True)
            else:
                s = ops.reshape(ops.mean(x, axis=[1, 2]), (-1, 1, 1, width))
            s = ops.relu(layers.Conv2D(4, 1)(s))
            x = x * ACTIVATIONS[act](layers.Conv2D(width, 1)(s))
        elif kind == "pool":
            x = ops.max_pool(x, arg, strides=arg)
    x = ops.mean(x, axis=(1, 2))
    return keras.Model(inputs, layers.Dense(NUM_CLASSES)(x))


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(), target=st.floats(0.5, 0.9))
def test_crop_of_ops_graphs_matches_the_plan(recipe, target):
    model = build(recipe)
    nodes = {id(op): len(op._inbound_nodes) for op in model.operations}
    try:
        plan = tf_precrop.plan(model, flops=target)
    except tf_precrop.InfeasibleBudgetError:
        event("budget below the fixed channels' cost")
        return  # fixed channels (padding, outputs) can put a low budget out of reach; that is reported
    event(f"kinds: {sorted({block[0] for block in recipe} & {'csp', 'split_at', 'chanpad'})}")
    small = tf_precrop.crop(model, plan, seed=0)
    assert small(X).shape == (2, NUM_CLASSES)
    assert small.count_params() == plan.params
    assert tf_precrop.count(small).macs == plan.macs
    assert tf_precrop.count(model).macs == plan.dense_macs
    assert plan.macs_ratio <= target
    # Every op's output in the cropped graph has the width the plan traced for it.
    by_name = {op.name: op for op in small.operations}
    for row in plan.layers:
        output = by_name[row.name].output
        if not isinstance(output, (list, tuple)):  # a split's row has its first part's width
            assert output.shape[-1] == row.width, (row.name, recipe)
    assert {id(op): len(op._inbound_nodes) for op in model.operations} == nodes  # the user's graph is untouched
