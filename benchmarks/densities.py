r"""Per-layer densities of SynFlow, ERK, the §3 optimum and PreCrop at equal FLOPs.

For ResNet-20 (32x32, CIFAR) and MobileNetV2 (224x224, ImageNet head) at each
--flops budget, every method's density p_l (kept fraction of each prunable
kernel) is computed on the same freshly initialised Keras 3 model:
    synflow   tf_precrop.sparsity.synflow (100 iterations, linearized float64 copy)
    erk       tf_precrop.sparsity.erk_densities (scaled to the MACs budget)
    optimal   tf_precrop.sparsity.optimal_densities (docs/method.md § Layer-wise densities, cvxpy)
    precrop   tf_precrop.plan(model, flops=...).layers[i].density (c_in * c_out)
It also reports the §3 objective sum_l log p_l of each method (the SynExp proxy;
the optimum is its maximum at this budget over unstructured densities) and the
SynFlow wall time.

Writes benchmarks/results/densities.{json,csv,md,png}.

Usage (from the repository root):
    python -m benchmarks.densities
    python -m benchmarks.densities --flops=0.5 --models=resnet20
"""

import csv
import json
import os
import subprocess
import time

from absl import app
from absl import flags
import numpy as np

import tf_precrop
from tf_precrop import sparsity

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet20", "mobilenet_v2"], "Models (tf_precrop.models.build names).")
flags.DEFINE_list("flops", ["0.5", "0.1"], "MACs budgets (ratios of the dense model).")
flags.DEFINE_integer("iterations", 100, "SynFlow iterations.")
flags.DEFINE_integer("seed", 0, "Seed of the model initialisation.")
flags.DEFINE_string("out", "benchmarks/results", "Output directory.")

INPUTS = {"resnet20": (32, 32, 3), "mobilenet_v2": (224, 224, 3)}
METHODS = ("synflow", "erk", "optimal", "precrop")


def _precrop_densities(model, kernels, flops):
    plan = tf_precrop.plan(model, flops=flops)
    by_layer = {lp.name: lp.density for lp in plan.layers if lp.density is not None}
    return {k.key: by_layer[k.path] for k in kernels}, plan.macs_ratio


def _effective_macs_ratio(kernels, dens):
    return sum(dens[k.key] * k.macs for k in kernels) / sum(k.macs for k in kernels)


def run_one(name, flops):
    """Densities of every method for one model and budget."""
    import keras  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(FLAGS.seed)
    model = tf_precrop.models.build(name, input_shape=INPUTS[name])
    kernels = sparsity.prunable_kernels(model)
    start = time.perf_counter()
    masks = sparsity.synflow(model, flops=flops, iterations=FLAGS.iterations)
    synflow_seconds = time.perf_counter() - start
    dens = {
        "synflow": masks.densities(),
        "erk": sparsity.erk_densities(model, flops=flops),
        "optimal": sparsity.optimal_densities(model, flops=flops),
    }
    dens["precrop"], precrop_ratio = _precrop_densities(model, kernels, flops)
    summary = {}
    for method in METHODS:
        p = np.array([dens[method][k.key] for k in kernels])
        summary[method] = {
            "macs_ratio": precrop_ratio if method == "precrop" else _effective_macs_ratio(kernels, dens[method]),
            "sum_log_p": float(np.sum(np.log(p))) if p.min() > 0 else float("-inf"),
            "empty_layers": int(np.sum(p == 0)),
            "dense_layers": int(np.sum(p >= 1 - 1e-9)),
        }
    layers = [
        {"key": k.key, "weights": k.weights, "macs": k.macs, **{m: dens[m][k.key] for m in METHODS}}
        for k in kernels
    ]
    return {
        "model": name,
        "input_shape": list(INPUTS[name]),
        "flops": flops,
        "synflow_seconds": synflow_seconds,
        "synflow_iterations": FLAGS.iterations,
        "synflow_overflow_rescaled": masks.info["normalized"],
        "summary": summary,
        "layers": layers,
    }


def _plot(results, path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axes = plt.subplots(len(results) // len(FLAGS.flops), len(FLAGS.flops),
                             figsize=(6 * len(FLAGS.flops), 3.2 * len(results) // len(FLAGS.flops)),
                             squeeze=False)
    for ax, res in zip(axes.ravel(), results):
        x = np.arange(len(res["layers"]))
        for method, style in zip(METHODS, ("-o", "-s", "-^", "-d")):
            y = np.array([max(layer[method], 1e-4) for layer in res["layers"]])
            ax.plot(x, y, style, ms=3, lw=1, label=method)
        ax.set_yscale("log")
        ax.set_title(f"{res['model']} @ flops={res['flops']}", fontsize=10)
        ax.set_xlabel("prunable kernel (graph order)")
        ax.set_ylabel("density p_l (0 shown at 1e-4)")
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _markdown(results, load):
    lines = [
        "# Per-layer densities at equal FLOPs: SynFlow, ERK, §3 optimum, PreCrop",
        "",
        "Produced by `python -m benchmarks.densities` "
        f"(SynFlow {FLAGS.iterations} iterations, seed {FLAGS.seed}). Machine load before the run "
        f"(`uptime`): `{load}`. Wall times are on 2 shared CPU cores.",
        "",
        "`p_l` = kept fraction of each prunable kernel. `macs_ratio` = effective kept MACs / dense "
        "MACs (PreCrop: the achieved ratio of the rounded plan). `sum log p` is the §3 objective "
        "(the SynExp proxy, docs/method.md § SynFlow and SynExp): the optimum maximises it over unstructured "
        "densities; "
        "PreCrop maximises it over c_in·c_out densities; -inf means a layer is empty.",
        "",
        "## Summary",
        "",
        "| model | flops | method | macs_ratio | sum log p | empty layers | dense layers |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for method in METHODS:
            s = res["summary"][method]
            lines.append(f"| {res['model']} | {res['flops']} | {method} | {s['macs_ratio']:.4f} | "
                         f"{s['sum_log_p']:.2f} | {s['empty_layers']} | {s['dense_layers']} |")
    lines += ["", "## SynFlow wall time", "", "| model | input | flops | iterations | seconds | overflow rescaling |",
              "|---|---|---|---|---|---|"]
    for res in results:
        lines.append(f"| {res['model']} | {'x'.join(map(str, res['input_shape']))} | {res['flops']} | "
                     f"{res['synflow_iterations']} | {res['synflow_seconds']:.1f} | "
                     f"{res['synflow_overflow_rescaled']} |")
    for res in results:
        lines += ["", f"## {res['model']} @ flops={res['flops']}", "",
                  "| kernel | weights | MACs | synflow | erk | optimal | precrop |", "|---|---|---|---|---|---|---|"]
        for layer in res["layers"]:
            lines.append(f"| {layer['key']} | {layer['weights']} | {layer['macs']} | "
                         + " | ".join(f"{layer[m]:.4f}" for m in METHODS) + " |")
    lines += ["", "![per-layer densities](densities.png)", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    results = [run_one(name, float(f)) for name in FLAGS.models for f in FLAGS.flops]
    os.makedirs(FLAGS.out, exist_ok=True)
    base = os.path.join(FLAGS.out, "densities")
    with open(base + ".json", "w") as f:
        json.dump({"uptime_before": load, "results": results}, f, indent=1)
    with open(base + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "flops", "kernel", "weights", "macs", *METHODS])
        for res in results:
            for layer in res["layers"]:
                writer.writerow([res["model"], res["flops"], layer["key"], layer["weights"], layer["macs"],
                                 *(f"{layer[m]:.6f}" for m in METHODS)])
    _plot(results, base + ".png")
    with open(base + ".md", "w") as f:
        f.write(_markdown(results, load))
    print(_markdown(results, load).split("## SynFlow wall time")[0])
    for res in results:
        print(f"SynFlow {res['model']} {res['input_shape']} flops={res['flops']}: {res['synflow_seconds']:.1f} s")


if __name__ == "__main__":
    app.run(main)
