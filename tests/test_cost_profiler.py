"""tf_precrop.count agrees exactly with TensorFlow's own profiler (FLOPs = 2 x MACs).

The model is traced at batch 1, frozen (variables -> constants) and profiled with
``tf.compat.v1.profiler``. The profiler also gives FLOPs to BiasAdd, BN arithmetic, Add, Mul, pooling...,
which are not MACs in our convention, so the comparison uses the profiler's per-op-type view
(``cmd="op"``) restricted to the kernel ops: Conv2D, DepthwiseConv2dNative, MatMul and
Conv2DBackpropInput. For a bias-free, BN-free model the profiler's grand total must match as well.

TensorFlow's FLOP formulas (tensorflow/python/ops/nn_ops.py, math_ops.py):

* Conv2D: ``2 * output elements * kh * kw * (kernel in-depth)``;
* DepthwiseConv2dNative: ``2 * output elements * kh * kw``;
* MatMul: ``2 * M * K * N``;
* Conv2DBackpropInput (Conv2DTranspose): ``2 * output elements * kernel size / (Cout * stride_h * stride_w)``,
  i.e. output positions / strides. With ``padding="same"`` that is exactly the input positions, our
  convention; with ``padding="valid"`` it is not (see ``test_conv2d_transpose_valid_differs``).
"""

import keras
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import tf_precrop

KERNEL_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "Conv2DBackpropInput")


def _frozen_graph(model) -> tf.Graph:
    spec = tf.TensorSpec((1,) + tuple(model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    return graph


def profile(model):
    """(total float ops, {op type: float ops}) from TensorFlow's profiler on the frozen graph."""
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    result = tf.compat.v1.profiler.profile(_frozen_graph(model), cmd="op", options=options)
    # The "op" view is a chain, one node per op type sorted by FLOPs, each the child of the previous one;
    # float_ops is the type's own total (total_float_ops is cumulative down the chain).
    by_type, stack = {}, list(result.children)
    while stack:
        node = stack.pop()
        by_type[node.name] = by_type.get(node.name, 0) + int(node.float_ops)
        stack.extend(node.children)
    assert sum(by_type.values()) == result.total_float_ops
    return int(result.total_float_ops), by_type


def kernel_flops(by_type) -> int:
    return sum(v for k, v in by_type.items() if k in KERNEL_OPS)


def _check(model):
    total, by_type = profile(model)
    macs = tf_precrop.count(model).macs
    assert kernel_flops(by_type) == 2 * macs, (by_type, macs)
    return total, by_type, macs


def test_mobilenet_v2_64():
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None)
    _, by_type, macs = _check(model)
    assert by_type["DepthwiseConv2dNative"] > 0 and by_type["MatMul"] == 2 * 1280 * 1000
    assert macs == 25_728_512


def test_resnet50_64():
    model = keras.applications.ResNet50(input_shape=(64, 64, 3), weights=None)
    _, _, macs = _check(model)
    assert macs == 316_817_408


def test_toy_se_depthwise_separable_concat():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    a = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    b = keras.layers.SeparableConv2D(24, 3, padding="valid")(x)
    b = keras.layers.ZeroPadding2D(1)(b)
    x = keras.layers.Concatenate()([a, b])
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = keras.layers.Conv2D(8, 1, activation="relu")(s)
    s = keras.layers.Conv2D(56, 1, activation="sigmoid")(s)
    x = keras.layers.Multiply()([x, s])
    x = keras.layers.SeparableConv2D(32, 3, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    _, by_type, macs = _check(model)
    # conv 6*6*27*16; dw 36*9*32; sep 16*(9*16 + 16*24); se 56*8 + 8*56; sep 9*(9*56 + 56*32); dense 320.
    assert macs == 15552 + 10368 + 16 * (144 + 384) + 896 + 9 * (504 + 1792) + 320
    assert by_type["Conv2D"] == 2 * (15552 + 16 * 384 + 896 + 9 * 1792)


def test_bias_free_model_total_matches():
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(16, 3, use_bias=False)(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, padding="same")(x)
    x = keras.layers.SeparableConv2D(16, 3, use_bias=False)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, use_bias=False)(x))
    total, by_type, macs = _check(model)
    assert total == 2 * macs == 2 * (64 * 27 * 16 + 64 * 9 * 16 + 36 * (9 * 16 + 256) + 576 * 7)


def test_dense_on_4d_tensor():
    inputs = keras.Input((5, 6, 8))
    model = keras.Model(inputs, keras.layers.Dense(12, use_bias=False)(inputs))
    total, by_type, macs = _check(model)
    assert macs == 5 * 6 * 8 * 12 and total == 2 * macs and set(by_type) == {"MatMul"}


def test_conv2d_transpose_same_padding():
    inputs = keras.Input((7, 6, 4))
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.Conv2DTranspose(5, 5, strides=3, padding="same", use_bias=False)(x)
    model = keras.Model(inputs, x)
    total, by_type, macs = _check(model)
    # Input positions x kernel size: 7*6 * 3*3*4*8 and 14*12 * 5*5*8*5.
    assert macs == 42 * 288 + 168 * 1000 and total == 2 * macs


@pytest.mark.parametrize("strides,kernel", [(2, 3), (1, 4)])
def test_conv2d_transpose_valid_differs(strides, kernel):
    """With padding="valid" the profiler counts output positions / strides, we count input positions
    (each input position is scattered over the whole kernel: the MACs really executed)."""
    inputs = keras.Input((7, 6, 4))
    layer = keras.layers.Conv2DTranspose(8, kernel, strides=strides, padding="valid", use_bias=False)
    model = keras.Model(inputs, layer(inputs))
    total, _ = profile(model)
    out_h, out_w = model.output_shape[1:3]
    kernel_size = kernel * kernel * 4 * 8
    assert total == 2 * out_h * out_w * kernel_size // (strides * strides)
    assert tf_precrop.count(model).macs == 7 * 6 * kernel_size
    assert total != 2 * tf_precrop.count(model).macs


def test_grouped_conv_hand_formula():
    inputs = keras.Input((9, 9, 16))
    x = keras.layers.Conv2D(32, 3, groups=4, strides=2, padding="same", use_bias=False, name="g4")(inputs)
    x = keras.layers.Conv2D(24, 1, groups=2, use_bias=False, name="g2")(x)
    model = keras.Model(inputs, x)
    report = tf_precrop.count(model)
    # positions * k*k * (Cin / G) * Cout
    assert report.layer("g4").macs == 5 * 5 * 3 * 3 * (16 // 4) * 32
    assert report.layer("g2").macs == 5 * 5 * 1 * 1 * (32 // 2) * 24
    assert report.layer("g4").params == 3 * 3 * 4 * 32
    assert report.macs == 28800 + 9600
    # Keras runs grouped convs in an XLA-compiled tf.function (`_conv_xla`); the frozen graph keeps it as a
    # StatefulPartitionedCall whose Conv2D lives in the function library, which the profiler does not
    # enter: it reports 0 FLOPs. So profile the same computation written as G plain convs on channel
    # slices, concatenated: a grouped conv is exactly that.
    inputs = keras.Input((9, 9, 16))
    x = keras.layers.Concatenate()([
        keras.layers.Conv2D(32 // 4, 3, strides=2, padding="same", use_bias=False)(inputs[..., 4 * g:4 * g + 4])
        for g in range(4)])
    x = keras.layers.Concatenate()([
        keras.layers.Conv2D(24 // 2, 1, use_bias=False)(x[..., 16 * g:16 * g + 16]) for g in range(2)])
    split = keras.Model(inputs, x)
    assert kernel_flops(profile(split)[1]) == 2 * report.macs
