"""Rules for keras_hub's composite image blocks (docs/method.md, "Composite layers and keras_hub").

Imported by ``registry.rule_for`` the first time it meets a layer class from the ``keras_hub`` package, so
the core never requires keras_hub. Each rule states the block's width fields and its own rounding
formulas; ``Composite`` measures the cost by probing.
"""

from __future__ import annotations

from fractions import Fraction

from tf_precrop.graph.composite import Composite, Inner, ratio_for


def _adjust_channels(x):
    from keras_hub.src.models.mobilenet.util import adjust_channels

    return adjust_channels(x)


class MobileNetDepthwiseRule(Composite):
    """``DepthwiseConvBlock(infilters, filters, squeeze_excite_ratio, residual)``: a depthwise conv over
    ``infilters`` (= its input), an optional squeeze-excite of ``adjust_channels(infilters * ratio)``
    channels, a pointwise conv to ``filters``; ``residual=True`` adds the input (widths tied)."""

    def widths(self, config, in_width):
        inner = {}
        if config["squeeze_excite_ratio"]:
            inner["se"] = Inner(_adjust_channels(config["infilters"] * config["squeeze_excite_ratio"]), 8)
        return config["filters"], inner

    def tied_output(self, config):
        return bool(config["residual"])

    def set_widths(self, config, widths):
        config.update(infilters=widths["in"], filters=widths["out"])
        if "se" in widths:
            config["squeeze_excite_ratio"] = ratio_for(widths["se"], widths["in"], _adjust_channels)
        # The block renames itself f"{name}_0" and saves that name: strip it so the rebuilt block keeps its name.
        if config.get("name", "").endswith("_0"):
            config["name"] = config["name"][:-2]
        return config


class MobileNetInvertedResidualRule(Composite):
    """``InvertedResidualBlock(expansion, infilters, filters, stride, squeeze_excite_ratio)``: expands to
    ``adjust_channels(expansion)`` channels, squeeze-excites to ``adjust_channels(hidden * ratio)``, projects to
    ``filters``; adds its input when ``stride == 1 and infilters == filters``."""

    def widths(self, config, in_width):
        hidden = _adjust_channels(config["expansion"])
        inner = {"hidden": Inner(hidden, 8)}
        if config["squeeze_excite_ratio"]:
            inner["se"] = Inner(_adjust_channels(hidden * config["squeeze_excite_ratio"]), 8)
        return config["filters"], inner

    def tied_output(self, config):
        return config["stride"] == 1

    def set_widths(self, config, widths):
        config.update(infilters=widths["in"], filters=widths["out"], expansion=widths["hidden"])
        if "se" in widths:
            config["squeeze_excite_ratio"] = ratio_for(widths["se"], widths["hidden"], _adjust_channels)
        return config


class MobileNetConvBnActRule(Composite):
    """``ConvBnActBlock(filter)``: a 1x1 conv to ``filter`` channels, batch norm, activation."""

    def widths(self, config, in_width):
        return config["filter"], {}

    def set_widths(self, config, widths):
        config["filter"] = widths["out"]
        return config


class EfficientNetBlockRule(Composite):
    """``MBConvBlock`` / ``FusedMBConvBlock(input_filters, output_filters, expand_ratio, se_ratio, strides,
    nores)``: expands to ``input_filters * expand_ratio`` (proportional to the input, no inner width),
    squeeze-excites to ``max(1, int(input_filters * se_ratio))`` (only while ``0 < se_ratio <= 1``), projects to
    ``output_filters``; adds its input when ``strides == 1 and input_filters == output_filters and not nores``.

    When ``input_filters * se_ratio`` is integral (e.g. 0.25 x a multiple of 4), the bottleneck is that exact
    fraction of the input and ``se_ratio`` never changes. Otherwise it is a width of its own and the rewrite
    picks the ratio that gives it, which must stay <= 1 (the block drops its squeeze-excite above 1).
    """

    def widths(self, config, in_width):
        inner = {}
        ratio, filters_in = config["se_ratio"], config["input_filters"]
        if 0 < ratio <= 1:
            se = max(1, int(filters_in * ratio))
            exact = Fraction(ratio).limit_denominator(1000)
            of_input = exact if exact * filters_in == se and float(exact) == ratio else None
            inner["se"] = Inner(se, of_input=of_input)
        return config["output_filters"], inner

    def tied_output(self, config):
        return config["strides"] == 1 and not config["nores"]

    def set_widths(self, config, widths):
        config.update(input_filters=widths["in"], output_filters=widths["out"])
        if "se" in widths:
            ratio = ratio_for(widths["se"], widths["in"], lambda x: max(1, int(x)))
            if not 0 < ratio <= 1:
                raise ValueError(
                    f"Block '{config.get('name')}' would need se_ratio={ratio:g} for a squeeze-excite of "
                    f"{widths['se']} channels over {widths['in']} inputs; above 1 the block drops its "
                    "squeeze-excite. Keep this block's widths with ignored_layers=[...]."
                )
            config["se_ratio"] = config["se_ratio"] if widths["se"] == int(widths["in"] * config["se_ratio"]) \
                else ratio
        return config


class SpatialPyramidPoolingRule(Composite):
    """DeepLabV3's ``SpatialPyramidPooling(num_channels)``: every branch and the projection have
    ``num_channels`` filters (its output width); its input width is whatever it is called on."""

    def widths(self, config, in_width):
        return config["num_channels"], {}

    def set_widths(self, config, widths):
        config["num_channels"] = widths["out"]
        return config


def rules() -> dict:
    """keras_hub layer class -> rule (empty when keras_hub is not importable)."""
    try:
        from keras_hub.src.models.deeplab_v3.deeplab_v3_layers import (
            SpatialPyramidPooling,
        )
        from keras_hub.src.models.efficientnet.fusedmbconv import FusedMBConvBlock
        from keras_hub.src.models.efficientnet.mbconv import MBConvBlock
        from keras_hub.src.models.mobilenet.mobilenet_backbone import (
            ConvBnActBlock,
            DepthwiseConvBlock,
            InvertedResidualBlock,
        )
    except ImportError:
        return {}
    return {
        DepthwiseConvBlock: MobileNetDepthwiseRule(),
        InvertedResidualBlock: MobileNetInvertedResidualRule(),
        ConvBnActBlock: MobileNetConvBnActRule(),
        MBConvBlock: EfficientNetBlockRule(),
        FusedMBConvBlock: EfficientNetBlockRule(),
        SpatialPyramidPooling: SpatialPyramidPoolingRule(),
    }


def adds_residual(layer) -> bool | None:
    """Whether a keras_hub block adds its input, by the block's own condition in keras_hub (None: not one of
    these blocks). Tests and benchmarks count these before and after a crop: a crop must keep every skip."""
    c, name = layer.get_config(), type(layer).__name__
    if name == "InvertedResidualBlock":
        return c["stride"] == 1 and c["infilters"] == c["filters"]
    if name == "DepthwiseConvBlock":
        return bool(c["residual"])
    if name in ("MBConvBlock", "FusedMBConvBlock"):
        return c["strides"] == 1 and c["input_filters"] == c["output_filters"] and not c["nores"]
    return None
