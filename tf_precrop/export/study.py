"""Latency at equal FLOPs: dense vs PreCrop vs uniform width vs SynFlow-sparse.

The engine behind ``python -m apps.benchmark`` and ``python -m benchmarks.latency``:

1. `build_exports` builds every arm of a model at each FLOPs ratio, exports it
   with `tf_precrop.export.to_tflite` (parity-checked) and records its cost;
2. `measure` times all files of a model alternately in rounds
   (`tf_precrop.export.benchmark_interleaved`) for each thread count and
   relates every arm's p50 latency to the dense model's;
3. `write_report` writes the Markdown table, CSV, JSON and a PNG of latency
   ratio against MAC ratio (one line per method).

Arms are written ``method`` or ``method:round_to``: ``dense``, ``precrop:8``
(``tf_precrop.crop(model, flops=f, round_to=8)``), ``precrop_latency:8``
(``tf_precrop.crop(model, latency=f, latency_model=m, round_to=8)``: the
target is a predicted-latency ratio, not a MACs ratio), ``uniform:8`` (one
shared width ratio, ``uniform=True``) and ``synflow`` (SynFlow masks at the
same effective MACs, applied with TF-MOT, stripped and exported with
``EXPERIMENTAL_SPARSITY``).
"""

import csv
import dataclasses
import json
import os
import time

import numpy as np

import tf_precrop
from tf_precrop.export import latency as latency_lib
from tf_precrop.export import tflite as tflite_lib

METHODS = ("dense", "precrop", "precrop_latency", "uniform", "synflow")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way of reaching a FLOPs budget.

    Attributes:
        method: One of `METHODS`.
        round_to: Width multiple of ``precrop`` and ``uniform``; ``None`` for
            ``dense`` and ``synflow``.
    """

    method: str
    round_to: int | None = None

    @property
    def label(self):
        """``"precrop r8"``, ``"uniform r8"``, ``"dense"`` or ``"synflow"``."""
        return self.method if self.round_to is None else f"{self.method} r{self.round_to}"


def parse_arms(specs, round_to=8):
    """Arms from strings such as ``"dense"``, ``"precrop"``, ``"precrop:1"``.

    Args:
        specs: Iterable of ``method`` or ``method:round_to`` strings.
        round_to: Width multiple used when a ``precrop``/``uniform`` spec has none.

    Returns:
        A list of `Arm`, ``dense`` first (it is the reference) and without
        duplicates; ``dense`` is added if missing.

    Raises:
        ValueError: On an unknown method, a bad round_to, or a round_to given
            to ``dense``/``synflow``.

    Example:
        >>> [a.label for a in parse_arms(["precrop:1", "precrop", "synflow"], round_to=8)]
        ['dense', 'precrop r1', 'precrop r8', 'synflow']
    """
    arms = [Arm("dense")]
    for spec in specs:
        method, _, r = str(spec).strip().partition(":")
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r} in methods; choose from {METHODS}. Received: {spec!r}")
        if method in ("dense", "synflow"):
            if r:
                raise ValueError(f"Method {method!r} takes no round_to. Received: {spec!r}")
            arm = Arm(method)
        else:
            value = r or round_to
            if not str(value).isdigit() or int(value) < 1:
                raise ValueError(f"round_to must be a positive integer. Received: {spec!r} (round_to={value!r})")
            arm = Arm(method, int(value))
        if arm not in arms:
            arms.append(arm)
    return arms


def _cost(model):
    report = tf_precrop.count(model)
    return {"macs": report.macs, "params": report.params}


def build_arm(model, arm, flops, *, seed=0, synflow_iterations=100, latency_model=None):
    """The model of one arm at a FLOPs ratio, ready for `to_tflite`.

    Args:
        model: The dense Keras 3 model.
        arm: An `Arm`.
        flops: Target MACs ratio (ignored for ``dense``; the predicted-latency
            ratio for ``precrop_latency``).
        seed: Initialisation seed of cropped models.
        synflow_iterations: SynFlow prune-rescore iterations.
        latency_model: The ``tf_precrop.LatencyModel`` of ``precrop_latency``.

    Returns:
        ``(export_model, cost, sparse)``: a Keras 3 model (or a stripped
        tf_keras model for ``synflow``), a dict with ``macs`` and ``params``
        (effective, i.e. non-zero, for ``synflow``), and whether to export
        with ``EXPERIMENTAL_SPARSITY``.

    Example:
        >>> small, cost, sparse = build_arm(model, Arm("precrop", 8), 0.5)

    Raises:
        ValueError: For ``precrop_latency`` without a ``latency_model``.
    """
    if arm.method == "dense":
        return model, _cost(model), False
    if arm.method == "precrop_latency":
        if latency_model is None:
            raise ValueError("Arm 'precrop_latency' needs a latency model. Received: latency_model=None")
        small = tf_precrop.crop(model, latency=flops, latency_model=latency_model, round_to=arm.round_to,
                                seed=seed)
        return small, _cost(small), False
    if arm.method in ("precrop", "uniform"):
        small = tf_precrop.crop(model, flops=flops, round_to=arm.round_to, uniform=arm.method == "uniform",
                                seed=seed)
        return small, _cost(small), False
    from tf_precrop import sparsity

    masks = sparsity.compute_masks("synflow", model, flops=flops, seed=seed, iterations=synflow_iterations)
    cost = sparsity.masked_cost(model, masks)
    final = sparsity.strip(sparsity.to_tfmot(model, masks))
    return final, {"macs": cost["macs"], "params": cost["params"]}, True


def predicted_latency_ratio(model, arm, flops, latency_model):
    """The latency ratio ``latency_model`` predicts for an arm (None for ``synflow``: masks keep the shapes).

    Args:
        model: The dense Keras 3 model.
        arm: An `Arm`.
        flops: As in `build_arm`.
        latency_model: A ``tf_precrop.LatencyModel``.

    Returns:
        Predicted latency / predicted dense latency, or None.

    Example:
        >>> predicted_latency_ratio(model, Arm("precrop", 8), 0.5, cal.latency_model)
        0.63
    """
    if arm.method == "dense":
        return 1.0
    if arm.method == "synflow":
        return None
    budget = {"latency": flops} if arm.method == "precrop_latency" else {"flops": flops}
    return tf_precrop.plan(model, round_to=arm.round_to, uniform=arm.method == "uniform",
                           latency_model=latency_model, **budget).latency_ratio


def build_exports(model_name, input_shape, flops_list, arms, work_dir, *, seed=0, synflow_iterations=100,
                  latency_model=None, log=print):
    """Builds and exports every arm of one model; returns one record per file.

    Args:
        model_name: A name for ``tf_precrop.models.build``.
        input_shape: ``(height, width, channels)``, or ``None`` for the model's default.
        flops_list: Target MACs ratios in (0, 1).
        arms: `Arm` list (``dense`` is exported once, at ratio 1).
        work_dir: Directory for the .tflite files (keep it out of git).
        seed: Initialisation seed.
        synflow_iterations: SynFlow iterations.
        latency_model: The ``tf_precrop.LatencyModel`` of ``precrop_latency`` arms.
        log: Progress printer.

    Returns:
        A list of dicts with ``model``, ``input_shape``, ``method``
        (arm label), ``round_to``, ``target_flops``, ``macs``, ``params``,
        ``macs_ratio``, ``params_ratio``, ``path``, ``size_bytes``,
        ``max_abs_diff``, ``sparse`` and ``build_s`` (seconds to build and export).

    Example:
        >>> records = build_exports("resnet20", (32, 32, 3), [0.5], parse_arms(["precrop"]), "work/")
    """
    os.makedirs(work_dir, exist_ok=True)
    model = tf_precrop.models.build(model_name, input_shape=tuple(input_shape) if input_shape else None)
    input_shape = list(model.input_shape[1:])
    dense_cost = _cost(model)
    records = []
    for arm in arms:
        for flops in [1.0] if arm.method == "dense" else flops_list:
            start = time.perf_counter()
            small, cost, sparse = build_arm(model, arm, flops, seed=seed, synflow_iterations=synflow_iterations,
                                            latency_model=latency_model)
            name = f"{model_name}_{arm.label.replace(' ', '_')}_f{flops:g}.tflite"
            info = tflite_lib.to_tflite(small, os.path.join(work_dir, name), sparse=sparse)
            records.append({
                "model": model_name,
                "input_shape": input_shape,
                "method": arm.label,
                "round_to": arm.round_to,
                "target_flops": flops,
                "macs": cost["macs"],
                "params": cost["params"],
                "macs_ratio": cost["macs"] / dense_cost["macs"],
                "params_ratio": cost["params"] / dense_cost["params"],
                "path": info["path"],
                "size_bytes": info["size_bytes"],
                "max_abs_diff": info["max_abs_diff"],
                "sparse": sparse,
                "build_s": time.perf_counter() - start,
            })
            if latency_model is not None:
                records[-1]["predicted_latency_ratio"] = predicted_latency_ratio(model, arm, flops, latency_model)
            log(f"built {name}: MACs ratio {records[-1]['macs_ratio']:.3f}, {info['size_bytes'] / 1e6:.2f} MB, "
                f"parity {info['max_abs_diff']:.2g}, {records[-1]['build_s']:.0f} s")
    return records


def measure(records, threads=(1, 2), *, warmup_runs=10, num_runs=100, rounds=10, log=print):
    """Times every exported file and relates it to the dense file of its model.

    Files of the same model are measured together, alternately in rounds, for
    each thread count.

    Args:
        records: Output of `build_exports` (one or several models).
        threads: Thread counts.
        warmup_runs: Untimed runs per file.
        num_runs: Timed runs per file.
        rounds: Rounds the timed runs are spread over.
        log: Progress printer.

    Returns:
        One row per record and thread count: the record plus ``num_threads``,
        the statistics of `tf_precrop.export.benchmark` (``init_ms``,
        ``first_run_ms``, ``mean_ms``, ``p50_ms``, ``p95_ms``, ``std_ms``,
        ``min_ms``, ``max_ms``, ``num_runs``), ``latency_ratio`` (p50 / dense
        p50) and ``latency_over_macs`` (latency_ratio / macs_ratio).

    Raises:
        ValueError: If a model has no ``dense`` record.

    Example:
        >>> rows = measure(records, threads=(1, 2), num_runs=100)
    """
    rows = []
    models = list(dict.fromkeys(r["model"] for r in records))
    for model_name in models:
        group = [r for r in records if r["model"] == model_name]
        dense = [i for i, r in enumerate(group) if r["method"] == "dense"]
        if not dense:
            raise ValueError(f"Model {model_name!r} has no 'dense' record to compare with.")
        for n in threads:
            stats = latency_lib.benchmark_interleaved([r["path"] for r in group], num_threads=n,
                                                      warmup_runs=warmup_runs, num_runs=num_runs, rounds=rounds)
            dense_p50 = stats[dense[0]]["p50_ms"]
            for record, s in zip(group, stats):
                ratio = s["p50_ms"] / dense_p50
                s = {k: v for k, v in s.items() if k not in ("path", "size_bytes", "warmup_runs")}
                rows.append({**record, **s, "latency_ratio": ratio,
                             "latency_over_macs": ratio / record["macs_ratio"]})
            log(f"measured {model_name} with {n} thread(s): dense p50 {dense_p50:.3f} ms")
    return rows


def goal_check(rows, method="precrop r8", min_pixels=224 * 224, threads=1, limit=1.10):
    """Whether the median latency/MACs ratio of an arm stays under ``limit``.

    Args:
        rows: Output of `measure`.
        method: Arm label checked.
        min_pixels: Only models whose input has at least this many pixels.
        threads: Thread count checked.
        limit: Allowed latency ratio per MAC ratio.

    Returns:
        A dict with ``values`` (latency_over_macs of every matching row),
        ``median`` (``None`` without rows), ``limit`` and ``holds``.

    Example:
        >>> goal_check(rows)["holds"]
        True
    """
    values = [
        r["latency_over_macs"] for r in rows
        if r["method"] == method and r["num_threads"] == threads
        and r["input_shape"][0] * r["input_shape"][1] >= min_pixels
    ]
    median = float(np.median(values)) if values else None
    return {"values": values, "median": median, "limit": limit,
            "holds": median is not None and median <= limit}


REPORT_COLUMNS = (
    ("model", "model", "{}"),
    ("method", "method", "{}"),
    ("target_flops", "target", "{:g}"),
    ("macs", "MACs (M)", "{:.2f}"),
    ("macs_ratio", "MACs/dense", "{:.3f}"),
    ("params", "params (K)", "{:.1f}"),
    ("size_bytes", "file KB", "{:.0f}"),
    ("num_threads", "threads", "{}"),
    ("p50_ms", "p50 ms", "{:.3f}"),
    ("p95_ms", "p95 ms", "{:.3f}"),
    ("latency_ratio", "latency/dense", "{:.3f}"),
    ("latency_over_macs", "latency ratio / MAC ratio", "{:.2f}"),
    ("predicted_latency_ratio", "predicted latency/dense", "{:.3f}"),  # only with a latency model
)
_SCALE = {"macs": 1e-6, "params": 1e-3, "size_bytes": 1 / 1024}


def markdown_table(rows):
    """The result rows as a Markdown table (MACs in millions, params in thousands).

    Args:
        rows: Output of `measure`.

    Returns:
        The table as a string.

    Example:
        >>> print(markdown_table(rows))
    """
    columns = [c for c in REPORT_COLUMNS if c[0] != "predicted_latency_ratio"
               or any(r.get(c[0]) is not None for r in rows)]
    return latency_lib.markdown(rows, columns, scale=_SCALE, text=("model", "method"))


def plot(rows, path):
    """PNG of latency ratio against MAC ratio: one panel per model and thread count.

    Args:
        rows: Output of `measure`.
        path: Output .png path.

    Returns:
        ``path``.

    Example:
        >>> plot(rows, "latency.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    threads = sorted({r["num_threads"] for r in rows})
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "dense"]
    fig, axes = plt.subplots(len(models), len(threads), figsize=(4.2 * len(threads), 3.4 * len(models)),
                             squeeze=False)
    for i, model_name in enumerate(models):
        for j, n in enumerate(threads):
            ax = axes[i][j]
            ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="latency = MACs")
            for method in methods:
                pts = sorted(
                    (r["macs_ratio"], r["latency_ratio"]) for r in rows
                    if r["model"] == model_name and r["num_threads"] == n and r["method"] == method
                )
                pts = [(1.0, 1.0)] + pts[::-1]
                ax.plot(*zip(*pts), marker="o", markersize=4, label=method)
            ax.set_title(f"{model_name}, {n} thread{'s' if n > 1 else ''}", fontsize=10)
            ax.set_xlim(0, 1.05)
            ax.set_ylim(0, max(1.3, max(r["latency_ratio"] for r in rows if r["model"] == model_name) + 0.05))
            ax.set_xlabel("MACs / dense")
            ax.set_ylabel("p50 latency / dense")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(rows, out_dir, stem, *, title, notes=()):
    """Writes ``<stem>.md``, ``.csv``, ``.json`` and ``.png`` into ``out_dir``.

    Args:
        rows: Output of `measure`.
        out_dir: Output directory.
        stem: File name without extension.
        title: Markdown title.
        notes: Markdown paragraphs placed after the table.

    Returns:
        A dict of the written paths by extension.

    Example:
        >>> write_report(rows, "results", "latency", title="Latency")
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("md", "csv", "json", "png")}
    public = [{k: v for k, v in r.items() if k != "path"} for r in rows]
    with open(paths["json"], "w") as f:
        json.dump(public, f, indent=1)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in public for k in r)))
        writer.writeheader()
        for r in public:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    plot(rows, paths["png"])
    with open(paths["md"], "w") as f:
        f.write(f"# {title}\n\n{markdown_table(rows)}\n\n![latency vs MACs]({stem}.png)\n")
        for note in notes:
            f.write(f"\n{note}\n")
    return paths
