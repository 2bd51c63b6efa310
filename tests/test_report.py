"""Tests for tf_precrop.report: width plots and Markdown tables."""

import re

import keras
import pytest

import tf_precrop
from tf_precrop import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny(name="tiny", width=8):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def plans():
    model = _tiny()
    return {
        "PreCrop flops=0.5": tf_precrop.plan(model, flops=0.5),
        "PreConfig flops=1": tf_precrop.preconfig_plan(model, flops=1.0, max_ratio=2.0),
    }


def test_plot_widths_writes_png(plans, tmp_path):
    path = tmp_path / "sub" / "widths.png"
    returned = report.plot_widths(plans, path, title="tiny")
    assert returned == str(path)
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_MAGIC)


def test_plot_widths_single_plan(plans, tmp_path):
    path = tmp_path / "one.png"
    report.plot_widths({"PreCrop": plans["PreCrop flops=0.5"]}, path)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_plot_widths_uses_width_carrying_layers_in_graph_order(plans):
    layers = [lp.name for lp in report._width_layers(plans["PreCrop flops=0.5"])]  # pylint: disable=protected-access
    assert layers == ["conv1", "conv2", "fc"]


def test_plot_widths_empty_dict(tmp_path):
    with pytest.raises(ValueError, match=re.escape(
            "`plans` must contain at least one CropPlan. Received: plans={}")):
        report.plot_widths({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_widths_rejects_non_plan(plans, tmp_path):
    with pytest.raises(TypeError, match=re.escape(
            "`plans['bad']` must be a tf_precrop.CropPlan. Received: value of type int")):
        report.plot_widths({"bad": 3}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="must be a dict of label -> CropPlan"):
        report.plot_widths(list(plans.values()), tmp_path / "x.png")


def test_plot_widths_rejects_plans_of_different_models(plans, tmp_path):
    other = tf_precrop.plan(_tiny(name="wider", width=16), flops=0.5)
    with pytest.raises(ValueError, match=re.escape(
            "All plans must be of the same model. Received: plans['PreCrop flops=0.5'] of model 'tiny'")):
        report.plot_widths({**plans, "other": other}, tmp_path / "x.png")


def test_plans_table():
    table = report.plans_table([
        {"model": "resnet50", "macs_ratio": 0.49999, "params": 1234567},
        {"model": "a|b", "error": None, "ok": True},
    ])
    assert table.splitlines() == [
        "| model | macs_ratio | params | error | ok |",
        "| --- | --- | --- | --- | --- |",
        "| resnet50 | 0.5 | 1,234,567 |  |  |",
        "| a\\|b |  |  |  | True |",
    ]


def test_plans_table_columns_and_empty():
    assert report.plans_table([{"a": 1.23456, "b": 2}], ["b", "a"], floatfmt=".2f").splitlines()[2] == "| 2 | 1.23 |"
    with pytest.raises(ValueError, match=re.escape("`rows` must contain at least one row. Received: rows=[]")):
        report.plans_table([])
