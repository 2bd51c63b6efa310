r"""Pruning a trained model (exploratory): which channels survive, and does fine-tuning recover?

Real Fashion-MNIST (prepared offline from the Debian files when needed), ResNet-20 at
--width. Per seed:
  1. dense: `apps.train --method=dense --save_model` for --dense_epochs (the trained model);
  2. for every --flops budget, allocation (precrop: the geometric program; uniform: one
     ratio) and --importances criterion: `tf_precrop.prune` in this process, test accuracy
     right after pruning;
  3. with --finetune_epochs > 0: `apps.train --init_from` the pruned model for that many
     epochs, without and with distillation from the dense model (`--teacher`);
  4. with --scratch: the same widths trained from scratch for dense + fine-tune epochs
     (`apps.train --method=precrop|uniform_width`), the "Rethinking the Value of Network
     Pruning" (Liu et al. 2019) control.
Every step is skipped when its result exists (resumable). Results: one JSON per run in
--out_dir, summarised (mean ± sample std over seeds, n) in --out.

Usage (from the repository root):
    python -m benchmarks.pretrained --seeds=1 --flops=0.5 --finetune_epochs=0   # minutes
    python -m benchmarks.pretrained --seeds=4 --flops=0.25,0.1 --dense_epochs=10 \
        --finetune_epochs=3 --scratch      # the issue's grid: hours, run by hand
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np

import tf_precrop
from tf_precrop import data

FLAGS = flags.FLAGS

flags.DEFINE_integer("seeds", 1, "Seeds 0 .. seeds-1 (one dense model each).", lower_bound=1)
flags.DEFINE_list("flops", ["0.5"], "MACs budgets.")
flags.DEFINE_list("allocations", ["precrop", "uniform"], "Width allocations: precrop, uniform.")
flags.DEFINE_list("importances", ["l1", "bn", "taylor", "random"], "tf_precrop.prune criteria.")
flags.DEFINE_integer("width", 8, "ResNet-20 first-stage filters.", lower_bound=1)
flags.DEFINE_integer("dense_epochs", 2, "Epochs of the dense model.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 0, "Fine-tuning epochs after pruning (0: none).", lower_bound=0)
flags.DEFINE_float("finetune_lr", 0.01, "Fine-tuning learning rate.")
flags.DEFINE_bool("scratch", False, "Also train the pruned widths from scratch (dense + fine-tune epochs).")
flags.DEFINE_integer("train_take", None, "Use only the first N training examples (smoke runs).")
flags.DEFINE_integer("test_take", None, "Use only the first N test examples (smoke runs).")
flags.DEFINE_integer("taylor_batches", 4, "Training batches the taylor criterion scores on.")
flags.DEFINE_string("data_dir", "benchmarks/work/tfds", "tfds data directory.")
flags.DEFINE_string("out_dir", "benchmarks/work/pretrained", "Models and per-run results.")
flags.DEFINE_string("out", "benchmarks/results/pretrained.md", "Markdown summary.")

DATASET = "fashion_mnist"
STAGES = ("trained", "pruned", "fine-tuned", "fine-tuned + KD", "from scratch")  # table order


def _train(run_dir, *args):
    """One `apps.train` child process (skipped when its results.json exists); returns its results."""
    results = os.path.join(run_dir, "results.json")
    if not os.path.exists(results):
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        cmd = [sys.executable, "-m", "apps.train", "--model=resnet20", f"--width={FLAGS.width}",
               f"--dataset={DATASET}", f"--data_dir={FLAGS.data_dir}", f"--model_dir={run_dir}", "--verbose=0",
               "--validation_freq=0",
               *([f"--train_take={FLAGS.train_take}"] if FLAGS.train_take else []),
               *([f"--test_take={FLAGS.test_take}"] if FLAGS.test_take else []), *args]
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, env=env)
    with open(results) as f:
        return json.load(f)


def _record(path, compute):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    row = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(row, f, indent=1)
    return row


def run_seed(seed, test_ds, train_ds):
    seed_dir = os.path.join(FLAGS.out_dir, f"seed{seed}")
    dense_path = os.path.join(seed_dir, "dense.keras")
    dense_results = _train(os.path.join(seed_dir, "dense"), "--method=dense", f"--seed={seed}",
                           f"--epochs={FLAGS.dense_epochs}", f"--save_model={dense_path}")
    rows = [{"seed": seed, "arm": "dense", "flops": 1.0, "stage": "trained",
             "test_accuracy": dense_results["test_accuracy"], "macs_ratio": 1.0}]
    dense = keras.saving.load_model(dense_path)
    taylor_data = [(x.numpy(), y.numpy()) for x, y in train_ds.take(FLAGS.taylor_batches)]
    for flops in (float(f) for f in FLAGS.flops):
        for allocation in FLAGS.allocations:
            plan = tf_precrop.plan(dense, flops=flops, uniform=allocation == "uniform")
            for importance in FLAGS.importances:
                arm = f"{allocation}/{importance}"
                name = f"{allocation}_{importance}_{flops:g}"
                pruned_path = os.path.join(seed_dir, f"{name}.keras")

                def prune_and_evaluate():
                    start = time.perf_counter()
                    pruned = tf_precrop.prune(dense, plan, importance=importance, seed=seed,
                                              data=taylor_data if importance == "taylor" else None,
                                              loss="sparse_categorical_crossentropy")
                    seconds = time.perf_counter() - start
                    pruned.save(pruned_path)
                    pruned.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
                    _, accuracy = pruned.evaluate(test_ds, verbose=0)
                    return {"seed": seed, "arm": arm, "flops": flops, "stage": "pruned", "test_accuracy":
                            float(accuracy), "macs_ratio": plan.macs_ratio, "prune_seconds": seconds}

                rows.append(_record(os.path.join(seed_dir, f"{name}.json"), prune_and_evaluate))
                if FLAGS.finetune_epochs:
                    for stage, extra in (("fine-tuned", []), ("fine-tuned + KD", [f"--teacher={dense_path}"])):
                        tag = "ft" if not extra else "ft_kd"
                        result = _train(os.path.join(seed_dir, f"{name}_{tag}"), "--method=dense",
                                        f"--init_from={pruned_path}", f"--seed={seed}",
                                        f"--epochs={FLAGS.finetune_epochs}", f"--lr={FLAGS.finetune_lr}", *extra)
                        rows.append({"seed": seed, "arm": arm, "flops": flops, "stage": stage,
                                     "test_accuracy": result["test_accuracy"], "macs_ratio": plan.macs_ratio})
            if FLAGS.scratch:
                method = "uniform_width" if allocation == "uniform" else "precrop"
                result = _train(os.path.join(seed_dir, f"{allocation}_scratch_{flops:g}"), f"--method={method}",
                                f"--flops={flops}", f"--seed={seed}",
                                f"--epochs={FLAGS.dense_epochs + FLAGS.finetune_epochs}")
                rows.append({"seed": seed, "arm": f"{allocation}/scratch", "flops": flops, "stage": "from scratch",
                             "test_accuracy": result["test_accuracy"], "macs_ratio": result["macs_ratio"]})
    return rows


def summary(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["flops"], r["arm"], r["stage"]), []).append(r)
    lines = ["# Pruning a trained ResNet-20 (exploratory)", "",
             f"Command: `python -m benchmarks.pretrained --seeds={FLAGS.seeds} --flops={','.join(FLAGS.flops)} "
             f"--width={FLAGS.width} --dense_epochs={FLAGS.dense_epochs} --finetune_epochs={FLAGS.finetune_epochs}"
             f"{' --scratch' if FLAGS.scratch else ''}"
             f"{f' --train_take={FLAGS.train_take}' if FLAGS.train_take else ''}"
             f"{f' --test_take={FLAGS.test_take}' if FLAGS.test_take else ''}`. Real Fashion-MNIST, the apps.train "
             "recipe; accuracy as mean ± sample std over seeds (n). Exploratory: one configuration, few seeds.", "",
             "| FLOPs budget | arm | stage | MACs ratio | test accuracy (%) | n |", "|---|---|---|---|---|---|"]
    for (flops, arm, stage), rs in sorted(groups.items(), key=lambda kv: (-kv[0][0], STAGES.index(kv[0][2]), kv[0][1])):
        acc = 100 * np.array([r["test_accuracy"] for r in rs])
        spread = f" ± {acc.std(ddof=1):.2f}" if len(acc) > 1 else ""
        lines.append(f"| {flops:g} | {arm} | {stage} | {np.mean([r['macs_ratio'] for r in rs]):.3f} | "
                     f"{acc.mean():.2f}{spread} | {len(acc)} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    if not tfds.builder(DATASET, data_dir=FLAGS.data_dir).is_prepared():
        data.prepare_fashion_mnist_offline(FLAGS.data_dir)
    info = data.info(DATASET)
    test_ds = data.load(DATASET, info.test_split, 256, data_dir=FLAGS.data_dir, take=FLAGS.test_take)
    train_ds = data.load(DATASET, info.train_split, 128, data_dir=FLAGS.data_dir, take=FLAGS.train_take)
    rows = []
    for seed in range(FLAGS.seeds):
        rows.extend(run_seed(seed, test_ds, train_ds))
        os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
        with open(FLAGS.out, "w") as f:
            f.write(summary(rows))
    print(summary(rows))


if __name__ == "__main__":
    app.run(main)
