"""Which kernels of a Keras 3 model are prunable, and what each one costs.

A *prunable kernel* is one weight tensor of a convolution or dense layer:

* ``Conv1D/2D/3D`` (grouped convolutions included), ``Conv1D/2D/3DTranspose``
  and ``Dense``: ``kernel``;
* ``DepthwiseConv1D/2D``: ``kernel`` (Keras 3 names the depthwise kernel so);
* ``SeparableConv1D/2D``: ``depthwise_kernel`` and ``pointwise_kernel``.

Nested ``Functional``/``Sequential`` sub-models (``keras.applications``
backbones inside a transfer model, ConvNeXt blocks) are walked recursively and
their layers are named by path, ``"outer/inner"``. A kernel is keyed
``"<layer path>/<attribute>"``, e.g. ``"conv1/kernel"`` or
``"block_1_sep/depthwise_kernel"``.

Costs follow the core counter's convention (``tf_precrop.count``): each kernel
has ``weights`` (its size) and ``macs`` (multiply-accumulates of one forward
pass, batch 1); ``macs / weights`` is the number of positions each weight is
applied at. A masked kernel's *effective* MACs are ``kept weights x macs /
weights``.
"""

import dataclasses

import keras
import numpy as np

from tf_precrop import cost as cost_lib

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


@dataclasses.dataclass(frozen=True)
class PrunableKernel:
    """One prunable kernel of a model.

    Attributes:
        key: ``"<layer path>/<attribute>"``, the key of its mask.
        path: Layer path, ``"outer/inner"`` inside nested models.
        attr: Attribute name of the kernel variable on the layer.
        layer: The Keras 3 layer holding the kernel.
        shape: Kernel shape.
        weights: Number of kernel weights.
        macs: Dense multiply-accumulates of the kernel (batch 1).
    """

    key: str
    path: str
    attr: str
    layer: keras.layers.Layer
    shape: tuple
    weights: int
    macs: int

    @property
    def variable(self):
        """The kernel variable (a ``keras.Variable``)."""
        return getattr(self.layer, self.attr)

    @property
    def macs_per_weight(self):
        """Positions at which each weight is applied (``macs / weights``)."""
        return self.macs / self.weights

    @property
    def out_axis(self):
        """Axis of the kernel that indexes output filters (last but one if transposed)."""
        return -2 if isinstance(self.layer, _TRANSPOSE) else -1

    @property
    def channel_axes(self):
        """Kernel axes whose index is one output channel of the kernel.

        ``(in channels, multiplier)`` for a depthwise kernel (its output channel
        ``c * multiplier + j``), otherwise the filter axis.
        """
        depthwise = self.attr == "depthwise_kernel" or isinstance(self.layer, _DEPTHWISE)
        ndim = len(self.shape)
        return (ndim - 2, ndim - 1) if depthwise else (ndim + self.out_axis,)


def kernel_attrs(layer):
    """Names of the prunable kernel attributes of one (non-model) layer.

    Args:
        layer: A Keras 3 layer.

    Returns:
        A tuple of attribute names, empty if the layer holds no prunable kernel.

    Example:
        >>> kernel_attrs(keras.layers.SeparableConv2D(8, 3))
        ('depthwise_kernel', 'pointwise_kernel')
    """
    if isinstance(layer, _SEPARABLE):
        return ("depthwise_kernel", "pointwise_kernel")
    if isinstance(layer, _CONV + _TRANSPOSE + _DEPTHWISE + (keras.layers.Dense,)):
        return ("kernel",)
    return ()


def iter_layers(model, prefix=""):
    """Yields ``(path, layer)`` for every leaf layer, recursing into sub-models.

    Args:
        model: A Keras 3 ``Functional`` or ``Sequential`` model.
        prefix: Path prefix of ``model``'s layers (used by the recursion).

    Yields:
        ``(path, layer)`` pairs in the model's layer order; ``path`` is
        ``"outer/inner"`` for a layer inside a nested model.

    Example:
        >>> [p for p, _ in iter_layers(model)][:2]
        ['input_layer', 'conv1']
    """
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer, path + "/")
        else:
            yield path, layer


def prunable_kernels(model):
    """Lists the prunable kernels of a model with their dense costs.

    MACs come from the project's one counter, ``tf_precrop.count`` (its
    ``LayerCost.kernels``): convolution, depthwise and separable kernels at
    output positions, transposed convolutions at input positions, ``Dense`` at
    every leading position of an N-D input.

    Args:
        model: A built Keras 3 model (nested sub-models allowed).

    Returns:
        A list of :class:`PrunableKernel` in layer order.

    Raises:
        TypeError: If ``model`` is not a Keras 3 model.
        ValueError: If the model has no prunable kernel, or the core counter
            refuses it (unknown layer, unknown input shape), with its message.

    Example:
        >>> ks = prunable_kernels(keras.applications.MobileNetV2(weights=None))
        >>> ks[0].key, ks[0].weights
        ('Conv1/kernel', 864)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Keras 3 model (keras.Model). "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    core = {lc.name: lc for lc in cost_lib.count(model).layers}
    kernels = []
    for path, layer in iter_layers(model):
        for attr in kernel_attrs(layer):
            shape = tuple(int(d) for d in getattr(layer, attr).shape)
            weights = int(np.prod(shape, dtype=np.int64))
            macs = int(core[path].kernels[attr].macs)
            kernels.append(
                PrunableKernel(
                    key=f"{path}/{attr}",
                    path=path,
                    attr=attr,
                    layer=layer,
                    shape=shape,
                    weights=weights,
                    macs=macs,
                )
            )
    if not kernels:
        raise ValueError(
            f"Model '{model.name}' has no prunable kernel (Conv, Dense, "
            "DepthwiseConv or SeparableConv layer)."
        )
    return kernels
