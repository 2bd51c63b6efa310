"""Reporting helpers: per-layer width plots of one or more plans, Markdown tables.

matplotlib (the `[plots]` extra) is imported lazily (inside `plot_widths`) with the non-interactive Agg
backend, so importing this module costs nothing and works on headless machines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from tf_precrop import _extras
from tf_precrop.plan import CropPlan

_MAX_TICK_LABELS = 60


def _width_layers(plan: CropPlan) -> list:
    """The layers whose config carries an output width (filters / units), in graph order."""
    return [lp for lp in plan.layers if lp.sets_width]


def plot_widths(plans: Mapping[str, CropPlan], path, title: str | None = None, *, log_scale: bool = True,
                dpi: int = 100) -> str:
    """Plots per-layer output widths, dense vs one or more plans of the same model, to a PNG.

    The x axis lists the layers whose config carries a width (``LayerPlan.sets_width``: Conv2D ``filters``,
    Dense ``units``...) in graph order. The top panel shows the widths (dense in grey, one line per plan),
    the bottom panel each plan's width ratio to dense (1 = unchanged, > 1 = the layer grew, as in PreConfig).

    Args:
        plans: label -> ``CropPlan``, e.g. ``{"PreCrop flops=0.5": p1, "PreConfig flops=1.0": p2}``. All
            plans must come from the same model (same width-carrying layers with the same dense widths).
            The dense widths are taken from the first plan.
        path: output PNG path; missing parent directories are created.
        title: figure title. None uses the model name.
        log_scale: plot widths on a log2 axis (widths span 16..2560 in most CNNs).
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a string.

    Raises:
        TypeError: if ``plans`` is not a mapping, a label is not a string or a value is not a ``CropPlan``.
        ValueError: if ``plans`` is empty, the plans are of different models, or a plan has no
            width-carrying layers.

    Example:
        >>> model = tf_precrop.models.build("efficientnetb0")
        >>> plot_widths({"PreCrop flops=0.5": tf_precrop.plan(model, flops=0.5),
        ...              "PreConfig flops=1": tf_precrop.preconfig_plan(model, flops=1.0)},
        ...             "widths.png", title="EfficientNetB0")
        'widths.png'
    """
    matplotlib = _extras.require("matplotlib", "tf_precrop.report.plot_widths")
    matplotlib.use("Agg")  # headless: no display needed
    plt = _extras.require("matplotlib.pyplot", "tf_precrop.report.plot_widths")
    if not isinstance(plans, Mapping):
        raise TypeError(f"`plans` must be a dict of label -> CropPlan. Received: plans of type "
                        f"{type(plans).__name__}")
    if not plans:
        raise ValueError("`plans` must contain at least one CropPlan. Received: plans={}")
    for label, plan in plans.items():
        if not isinstance(label, str):
            raise TypeError(f"`plans` labels must be strings. Received: label={label!r}")
        if not isinstance(plan, CropPlan):
            raise TypeError(f"`plans[{label!r}]` must be a tf_precrop.CropPlan. Received: value of type "
                            f"{type(plan).__name__}")

    labels = list(plans)
    reference = _width_layers(plans[labels[0]])
    if not reference:
        raise ValueError(f"Plan {labels[0]!r} has no width-carrying layers (no layer with sets_width=True).")
    signature = [(lp.name, lp.dense_width) for lp in reference]
    for label in labels[1:]:
        other = [(lp.name, lp.dense_width) for lp in _width_layers(plans[label])]
        if other != signature:
            raise ValueError(
                f"All plans must be of the same model. Received: plans[{labels[0]!r}] of model "
                f"{plans[labels[0]].model_name!r} with {len(signature)} width-carrying layers and "
                f"plans[{label!r}] of model {plans[label].model_name!r} with {len(other)}."
            )


    x = list(range(len(reference)))
    dense = [lp.dense_width for lp in reference]
    fig, (ax, ax_ratio) = plt.subplots(
        2, 1, sharex=True, figsize=(min(max(7.0, 0.11 * len(x) + 3), 18), 6.4),
        gridspec_kw={"height_ratios": [3, 2]})
    ax.plot(x, dense, color="0.45", linewidth=2.2, marker="s", markersize=2.5, label="dense", zorder=1)
    ax_ratio.axhline(1.0, color="0.45", linewidth=1.5)
    for i, label in enumerate(labels):
        plan = plans[label]
        widths = [lp.width for lp in _width_layers(plan)]
        ratios = [w / d if d else 1.0 for w, d in zip(widths, dense)]
        text = f"{label} (MACs {plan.macs_ratio:.3f}x, params {plan.params_ratio:.3f}x)"
        color = f"C{i}"
        ax.plot(x, widths, color=color, linewidth=1.2, marker="o", markersize=2.5, label=text, zorder=2 + i)
        ax_ratio.plot(x, ratios, color=color, linewidth=1.0, marker="o", markersize=2.5, zorder=2 + i)
    if log_scale:
        ax.set_yscale("log", base=2)
    ax.set_ylabel("output width (filters / units)")
    ax_ratio.set_ylabel("width / dense width")
    ax_ratio.set_xlabel(f"width-carrying layer, graph order ({len(x)} layers)")
    ax.set_title(title if title is not None else f"{plans[labels[0]].model_name}: per-layer widths")
    ax.grid(True, which="major", alpha=0.3)
    ax_ratio.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if len(x) <= _MAX_TICK_LABELS:
        ax_ratio.set_xticks(x, [lp.name.rsplit("/", 1)[-1] for lp in reference], rotation=90, fontsize=5)
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plans_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, *, floatfmt: str = ".4g") -> str:
    """Formats rows of results as a GitHub Markdown table.

    Args:
        rows: sequence of dicts (one per table row). Missing keys print as empty cells.
        columns: column keys in order. None uses the keys of the first row, then any new keys of later rows.
        floatfmt: format spec for floats (ints are printed with thousands separators, None as empty).

    Returns:
        The table as a string (header, separator, one line per row), without a trailing newline.

    Raises:
        ValueError: if ``rows`` is empty.
        TypeError: if a row is not a mapping.

    Example:
        >>> print(plans_table([{"model": "resnet50", "macs_ratio": 0.49999}]))
        | model | macs_ratio |
        | --- | --- |
        | resnet50 | 0.5 |
    """
    if not rows:
        raise ValueError("`rows` must contain at least one row. Received: rows=[]")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"`rows[{i}]` must be a dict. Received: value of type {type(row).__name__}")
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)

    def cell(value):
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return format(value, floatfmt)
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, columns)) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
