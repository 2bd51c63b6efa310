"""Property tests: crop random functional CNN graphs and check every promise of the plan.

A graph is a recipe (a tuple of blocks) drawn by hypothesis and built at 16x16x3 with widths >= 16, so an
example takes a fraction of a second. Blocks: Conv2D (stride 1 or 2), grouped Conv2D (groups 2 or 4),
DepthwiseConv2D (depth_multiplier 1 or 2), SeparableConv2D, Conv2DTranspose (upsampling 1 or 2), BN/ReLU,
residual Add (1x1 projection when the widths differ), Concatenate of two branches, squeeze-excite (GAP -> 1x1
reduce -> 1x1 expand sigmoid -> Multiply), MaxPooling; head Flatten+Dense or GAP+Dense.

The third test nests such a graph in Sequential/functional models (three deep, shared inner models) with
ignored custom layers. Every example goes through crop(), which checks the rebuilt model against its plan
(tf_precrop.verify): 330 examples in all.
"""

import keras
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf_precrop

INPUT_SHAPE = (16, 16, 3)
NUM_CLASSES = 10
WIDTHS = st.sampled_from([16, 24, 32])
CONV_CLASSES = ("Conv2D", "SeparableConv2D", "Conv2DTranspose", "Dense")


@st.composite
def recipes(draw, max_blocks=3):
    """A random graph as a tuple of hashable block specs; widths and resolution are tracked so every
    drawn block is valid (grouped widths divisible, strides only while the map is >= 4x4)."""
    width = draw(WIDTHS)
    size = INPUT_SHAPE[0]
    blocks = [("stem", width, draw(st.sampled_from([1, 2])))]
    size //= blocks[0][2]
    for _ in range(draw(st.integers(1, max_blocks))):
        # A concatenation may feed anything: a grouped conv keeps each part divisible, and an SE gate or
        # identity add over it ties every part to one shared ratio (docs/method.md).
        kinds = ["conv", "dw", "sep", "res", "cat", "group", "se", "tconv"]
        if size >= 4:
            kinds.append("pool")
        kind = draw(st.sampled_from(kinds))
        stride = draw(st.sampled_from([1, 2])) if size >= 4 else 1
        norm = draw(st.booleans())
        if kind == "conv":
            out, k = draw(WIDTHS), draw(st.sampled_from([1, 3]))
            blocks.append(("conv", out, k, stride, norm))
            width, size = out, -(-size // stride)
        elif kind == "group":
            # Width >= 8 x groups on both sides: every group keeps width steps <= 1/8 of its dense width,
            # so the allowed-width grid can come within 0.08 of any MAC target (16 -> groups=4 has steps
            # of 1/4, and then no plan at all reaches e.g. [0.82, 0.9] on stem16 -> grouped4 -> GAP).
            groups = draw(st.sampled_from([g for g in (2, 4) if width % g == 0 and width >= 8 * g]))
            out = draw(st.sampled_from([w for w in (16, 24, 32, 48) if w >= 8 * groups]))
            blocks.append(("group", out, groups, stride, norm))
            width, size = out, -(-size // stride)
        elif kind == "dw":
            mult = draw(st.sampled_from([1, 2]))
            blocks.append(("dw", mult, stride, norm))
            width, size = width * mult, -(-size // stride)
        elif kind == "sep":
            out = draw(WIDTHS)
            blocks.append(("sep", out, stride, norm))
            width, size = out, -(-size // stride)
        elif kind == "res":
            out = draw(st.sampled_from([16, 24, 32]))
            blocks.append(("res", out, norm))
            width = out
        elif kind == "cat":
            a, b = draw(WIDTHS), draw(WIDTHS)
            second = draw(st.sampled_from(["conv3", "dw"]))
            blocks.append(("cat", a, b, second))
            width = a + (width if second == "dw" else b)
        elif kind == "tconv":
            # Upsampling only while the map is small, so examples stay cheap.
            out, k = draw(WIDTHS), draw(st.sampled_from([2, 3]))
            up = draw(st.sampled_from([1, 2])) if size <= 8 else 1
            blocks.append(("tconv", out, k, up, norm))
            width, size = out, size * up
        elif kind == "se":
            blocks.append(("se", draw(st.sampled_from([4, 8]))))
        elif kind == "pool":
            blocks.append(("pool",))
            size //= 2
    blocks.append(("head", draw(st.sampled_from(["flatten", "gap"]))))
    return tuple(blocks)


def build(recipe) -> keras.Model:
    inputs = keras.Input(INPUT_SHAPE)
    x = apply_blocks(_stem(inputs, recipe), recipe[1:-1])
    return keras.Model(inputs, _head(x, recipe), name="fuzz")


def _stem(inputs, recipe):
    _, stem_width, stem_stride = recipe[0]
    return keras.layers.Conv2D(stem_width, 3, strides=stem_stride, padding="same", name="stem")(inputs)


def _head(x, recipe):
    L = keras.layers
    if recipe[-1][1] == "flatten":
        x = L.Flatten(name="flatten")(x)
    else:
        x = L.GlobalAveragePooling2D(name="gap")(x)
    return L.Dense(NUM_CLASSES, name="fc")(x)


def apply_blocks(x, blocks):
    L = keras.layers

    def bn_relu(x, norm, name):
        if norm:
            x = L.BatchNormalization(name=f"{name}_bn")(x)
        return L.ReLU(name=f"{name}_relu")(x)

    for i, block in enumerate(blocks):
        kind, name = block[0], f"b{i}_{block[0]}"
        if kind == "conv":
            _, out, k, stride, norm = block
            x = bn_relu(L.Conv2D(out, k, strides=stride, padding="same", name=name)(x), norm, name)
        elif kind == "group":
            _, out, groups, stride, norm = block
            x = L.Conv2D(out, 3, strides=stride, groups=groups, padding="same", name=name)(x)
            x = bn_relu(x, norm, name)
        elif kind == "dw":
            _, mult, stride, norm = block
            x = L.DepthwiseConv2D(3, strides=stride, depth_multiplier=mult, padding="same", name=name)(x)
            x = bn_relu(x, norm, name)
        elif kind == "sep":
            _, out, stride, norm = block
            x = bn_relu(L.SeparableConv2D(out, 3, strides=stride, padding="same", name=name)(x), norm, name)
        elif kind == "tconv":
            _, out, k, up, norm = block
            x = bn_relu(L.Conv2DTranspose(out, k, strides=up, padding="same", name=name)(x), norm, name)
        elif kind == "res":
            _, out, norm = block
            y = bn_relu(L.Conv2D(out, 3, padding="same", name=f"{name}_a")(x), norm, f"{name}_a")
            y = L.Conv2D(out, 3, padding="same", name=f"{name}_b")(y)
            if x.shape[-1] != out:
                x = L.Conv2D(out, 1, name=f"{name}_proj")(x)
            x = L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([x, y]))
        elif kind == "cat":
            _, a, b, second = block
            left = L.Conv2D(a, 1, activation="relu", name=f"{name}_l")(x)
            if second == "dw":
                right = L.DepthwiseConv2D(3, padding="same", name=f"{name}_r")(x)
            else:
                right = L.Conv2D(b, 3, padding="same", activation="relu", name=f"{name}_r")(x)
            x = L.Concatenate(name=name)([left, right])
        elif kind == "se":
            _, reduced = block
            s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)
            s = L.Conv2D(reduced, 1, activation="relu", name=f"{name}_reduce")(s)
            s = L.Conv2D(x.shape[-1], 1, activation="sigmoid", name=f"{name}_expand")(s)
            x = L.Multiply(name=f"{name}_gate")([x, s])
        elif kind == "pool":
            x = L.MaxPooling2D(2, name=name)(x)
    return x


X = np.random.default_rng(0).random((2,) + INPUT_SHAPE, dtype=np.float32)


def _snapshot(model):
    return model.get_config(), [w.copy() for w in model.get_weights()]


def _assert_unchanged(model, snapshot):
    config, weights = snapshot
    assert model.get_config() == config
    after = model.get_weights()
    assert len(after) == len(weights)
    for a, b in zip(after, weights):
        np.testing.assert_array_equal(a, b)


def _assert_plan_holds(model, small, plan):
    assert small(X).shape == (2, NUM_CLASSES)
    assert small.count_params() == plan.params
    assert tf_precrop.count(small, ignored_layers=plan.ignored_layers).macs == plan.macs
    assert [layer.name for layer in small.layers][1:] == [layer.name for layer in model.layers][1:]


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(), target=st.floats(0.3, 0.9))
def test_crop_meets_flops_budget(recipe, target):
    model = build(recipe)
    before = _snapshot(model)
    plan = tf_precrop.plan(model, flops=target)
    small = tf_precrop.crop(model, flops=target, seed=0)
    _assert_plan_holds(model, small, plan)
    assert tf_precrop.count(model).macs == plan.dense_macs
    achieved = plan.macs_ratio
    assert target - 0.08 <= achieved <= target, (achieved, target, recipe)
    _assert_unchanged(model, before)


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(), params=st.floats(0.55, 0.9), flops=st.none() | st.floats(0.55, 0.9),
       round_to=st.sampled_from([1, 4, 8]))
def test_crop_params_budget_and_round_to(recipe, params, flops, round_to):
    # round_to=8 on a 16-wide group leaves it 8 or 16 wide: ratios below ~0.5 can be infeasible
    # (e.g. stem16 -> conv16 -> Flatten -> Dense at params=0.375 raises InfeasibleBudgetError, rightly).
    model = build(recipe)
    before = _snapshot(model)
    plan = tf_precrop.plan(model, params=params, flops=flops, round_to=round_to)
    small = tf_precrop.crop(model, plan, seed=0)
    _assert_plan_holds(model, small, plan)
    assert plan.params_ratio <= params
    if flops is not None:
        assert plan.macs_ratio <= flops
    for layer in model.layers:
        if type(layer).__name__ not in CONV_CLASSES:
            continue
        key = "units" if isinstance(layer, keras.layers.Dense) else "filters"
        dense, new = layer.get_config()[key], small.get_layer(layer.name).get_config()[key]
        assert new == dense or new % round_to == 0, (layer.name, dense, new, round_to)
    _assert_unchanged(model, before)


# --- Nesting and ignored custom layers --------------------------------------------------------------------
# A body (stem, an optional nested model, the recipe's blocks) is itself a nested functional model, inside a
# Sequential or a functional outer model: functional in Sequential, Sequential in functional and three deep
# (Sequential > body > inner Sequential) all occur. The inner model may be shared (called twice in series),
# and a custom layer without a rule may sit after the stem or before the head, listed in ignored_layers.


class Double(keras.layers.Layer):
    """A custom layer without a rule and without weights (reused as it is by the rebuild)."""

    def call(self, x):
        return x * 2.0


class ChannelBias(keras.layers.Layer):
    """A custom layer without a rule that holds a per-channel weight (its width stays fixed when ignored)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + self.bias


@st.composite
def nested_recipes(draw):
    recipe = draw(recipes(max_blocks=2))
    return (
        recipe,
        draw(st.sampled_from(["sequential", "functional"])),  # the outer model
        draw(st.sampled_from([None, "sequential", "functional"])),  # the inner model inside the body
        draw(st.booleans()),  # the inner model is called twice (shared)
        draw(st.sampled_from([None, "double", "bias", "lambda"])),  # an ignored custom layer...
        draw(st.sampled_from(["after_stem", "before_head"])),  # ...and where it sits
        draw(st.booleans()),  # ignore it by nested path ("body/custom") rather than by name
    )


def _custom_layer(kind):
    if kind == "double":
        return Double(name="custom")
    if kind == "bias":
        return ChannelBias(name="custom")
    return keras.layers.Lambda(lambda t: t * 2, name="custom")


def _inner_model(kind, shape, shared):
    """Width-preserving when shared in series (its output feeds its own input), else it widens."""
    L = keras.layers
    width = shape[-1]
    out = width if shared else width + 8
    if kind == "sequential":
        return keras.Sequential([keras.Input(shape), L.Conv2D(out, 3, padding="same", name="inner_conv"),
                                 L.ReLU(name="inner_relu")], name="inner")
    inputs = keras.Input(shape)
    y = L.Conv2D(out, 3, padding="same", name="inner_conv")(inputs)
    skip = inputs if out == width else L.Conv2D(out, 1, name="inner_proj")(inputs)
    return keras.Model(inputs, L.Add(name="inner_add")([skip, y]), name="inner")


def build_nested(spec):
    recipe, outer, inner, shared, custom, where, by_path = spec
    inputs = keras.Input(INPUT_SHAPE)
    x = _stem(inputs, recipe)
    if custom and where == "after_stem":
        x = _custom_layer(custom)(x)
    if inner:
        model = _inner_model(inner, tuple(x.shape[1:]), shared)
        x = model(x)
        if shared:
            x = model(keras.layers.ReLU(name="between")(x))
    x = apply_blocks(x, recipe[1:-1])
    if custom and where == "before_head":
        x = _custom_layer(custom)(x)
    body = keras.Model(inputs, x, name="body")
    head = [keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(NUM_CLASSES, name="fc")]
    if outer == "sequential":
        model = keras.Sequential([keras.Input(INPUT_SHAPE), body, *head], name="fuzz_nested")
    else:
        outer_in = keras.Input(INPUT_SHAPE)
        model = keras.Model(outer_in, head[1](head[0](body(outer_in))), name="fuzz_nested")
    ignored = [] if not custom else ["body/custom" if by_path else "custom"]
    return model, ignored


def _least_macs_ratio(model, ignored):
    """MACs ratio with every free group at its minimum width (ignored layers pin theirs)."""
    from tf_precrop import solver
    from tf_precrop.graph.walker import ModelGraph

    problem = solver.Problem(ModelGraph(model, ignored_layers=ignored))
    return problem.ratio_at("macs", problem.min_log)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=nested_recipes(), fraction=st.floats(0.2, 0.9))
def test_crop_nested_models_and_ignored_layers(spec, fraction):
    model, ignored = build_nested(spec)
    before = _snapshot(model)
    # The budget is drawn within what the pinned widths leave reachable.
    least = _least_macs_ratio(model, ignored)
    target = min(1.0, least + fraction * (1 - least) + 1e-6)
    plan = tf_precrop.plan(model, flops=target, ignored_layers=ignored)
    assert plan.ignored_layers == ignored
    small = tf_precrop.crop(model, plan, seed=0)  # checked against the plan inside crop (the guarantee)
    _assert_plan_holds(model, small, plan)
    assert plan.macs_ratio <= target
    assert type(small) is type(model)
    if spec[2] is not None:  # the inner model is rebuilt, and cropped when its group is free
        assert small.get_layer("body").get_layer("inner") is not model.get_layer("body").get_layer("inner")
    if spec[4] in ("double", "lambda"):  # weightless ignored layers are reused
        assert small.get_layer("body").get_layer("custom") is model.get_layer("body").get_layer("custom")
    _assert_unchanged(model, before)
