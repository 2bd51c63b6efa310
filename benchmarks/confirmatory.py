r"""Confirmatory experiment of issue 13: does PreCrop beat uniform width (and SynFlow)?

Width-8 ResNet-20 on real Fashion-MNIST (offline from the Debian files, see
`tf_precrop.data`). Unlike the exploratory 2-epoch grid of `benchmarks.accuracy`,
the last 10,000 of the 60,000 training images are held out as a validation split
(fixed, never trained on): every recipe decision is made on it, and the test set is
evaluated exactly once per run, at the end.

Arms (see ARMS): dense; uniform width (`uniform=True`); PreCrop at uniform's
*achieved* MACs (uniform only reaches a few shared ratios); PreCrop with a latency
budget (a latency model calibrated on this machine, stage `latency`); SynFlow
(TF-MOT masks); random weights at SynFlow's per-layer densities; random width
configurations at uniform's MACs (a fresh random allocation per seed); the dense
model trained through the TF-MOT path with all-ones masks (framework control).

Stages (--stage):
    speed    interleaved training-speed measurement of the Keras 3 setups
             (XLA jit_compile on/off, input pipeline alone) -> results/pilot_training_speed.json
    pilot    the pilot runs (seeds >= 1000, which the grid never uses), one child
             process at a time -> results/pilot/<run>.json
    latency  calibrates a latency model of this machine (LiteRT, 1 thread) and freezes the
             latency arm's budgets (measured p50 within 3 % of uniform's) -> results/
             confirmatory_latency_{model,budgets}.json; wants a quiet machine
    grid     the pre-registered grid, read from the ```json grid block of
             benchmarks/PREREGISTRATION.md; refuses to run unless that file is committed and
             unmodified
    report   writes results/pilot.md from the finished pilot runs and, once registered,
             results/confirmatory.md (primary tests only when the primary grid is complete)
    run      internal: one training run in this process (the children)

Every run is a child process (`python -m benchmarks.confirmatory --stage=run`) started
without TF_USE_LEGACY_KERAS (importing TF-MOT sets it; a child inheriting it would get
tf_keras as `tf.keras`). Finished runs are per-run JSON records (git commit, exact
command, machine load, validation curve, test accuracy, achieved MACs/params, epoch
times) in the archive directory; a stage skips every run whose record exists, so it
resumes across sessions.

Usage (from the repository root):
    python -m benchmarks.confirmatory --stage=speed
    nohup python -m benchmarks.confirmatory --stage=pilot > benchmarks/work/pilot.log 2>&1 &
    python -m benchmarks.confirmatory --stage=report
"""

import json
import os
import platform
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from apps import common  # TrainMonitor, build_model (defines apps' shared flags: model, width, seed...)
from benchmarks import runs as runs_lib
from benchmarks.stats import detectable_effect
from benchmarks.stats import seeds_for_difference
from benchmarks.stats import seeds_for_equivalence

FLAGS = flags.FLAGS

flags.DEFINE_enum("stage", "report", ["speed", "pilot", "latency", "grid", "report", "run"],
                  "What to do (see the module docstring).")
flags.DEFINE_string("spec", None, "--stage=run: JSON file of the run to train.")
flags.DEFINE_string("data_dir", "benchmarks/work/tfds", "tfds data directory.")
flags.DEFINE_string("work_dir", "benchmarks/work/confirmatory", "Run directories and logs (git-ignored).")
flags.DEFINE_string("results_dir", "benchmarks/results", "Where result pages and records go.")
flags.DEFINE_bool("jit_compile", False, "XLA for the Keras 3 arms (stage speed decides; see "
                  "results/pilot_training_speed.json).")
flags.DEFINE_integer("speed_steps", 150, "stage speed: timed steps per setup and round.")
flags.DEFINE_integer("speed_rounds", 2, "stage speed: interleaved rounds.")
flags.DEFINE_list("pilot_plan", ["curve", "sd"], "stage pilot: curve = dense validation curve over "
                  "--curve_epochs; sd = dense, uniform and PreCrop at flops 0.25 over --pilot_seeds.")
flags.DEFINE_integer("curve_epochs", 20, "Length of the pilot's dense validation curve.")
flags.DEFINE_integer("pilot_epochs", 10, "Length of the pilot's seed-to-seed runs.")
flags.DEFINE_list("pilot_seeds", [str(s) for s in range(1001, 1011)],
                  "Seeds of the pilot's seed-to-seed runs (>= 1000: never used by the grid).")
flags.DEFINE_list("pilot_arms", ["uniform", "precrop", "dense"], "stage pilot: order of the arms of each "
                  "seed-to-seed seed (the pair PreCrop - uniform first by default: its paired SD sizes the grid).")
flags.DEFINE_string("stop_at", None, "UTC time HH:MM after which the pilot starts no new run.")

MODEL = "resnet20"
WIDTH = 8
DATASET = "fashion_mnist"
TRAIN_SPLIT = "train[:50000]"
VALIDATION_SPLIT = "train[50000:]"
"""The validation split: the last 10,000 training images, fixed, never trained on."""
TEST_SPLIT = "test"
RECIPE = {"batch_size": 128, "lr": 0.1, "schedule": "cosine", "weight_decay": 5e-4,
          "momentum": 0.9, "nesterov": True}
"""The recipe of every arm (as benchmarks.accuracy's, only longer and with a validation split)."""

KERAS3_ARMS = ("dense", "uniform", "precrop", "precrop_latency", "random_width")
TFMOT_ARMS = ("synflow", "synflow_random", "tfmot_dense")
ARMS = KERAS3_ARMS + TFMOT_ARMS
PILOT_SEED_MIN = 1000
"""Pilot seeds are >= this; the grid's seeds are below it (and new: not 0..7 of the old grid)."""


def run_name(spec):
    """e.g. pilot_precrop_f0.25_e10_s1001."""
    budget = "" if spec["budget"] is None else f"_f{spec['budget']:g}"
    return f"{spec['phase']}_{spec['arm']}{budget}_e{spec['epochs']}_s{spec['seed']}"


def make_spec(phase, arm, budget, seed, epochs):
    if arm not in ARMS:
        raise ValueError(f"Unknown arm: {arm!r}. Arms: {', '.join(ARMS)}")
    if (phase == "pilot") != (seed >= PILOT_SEED_MIN):
        raise ValueError(f"Pilot seeds are >= {PILOT_SEED_MIN}, grid seeds below. "
                         f"Received: phase={phase!r}, seed={seed}")
    spec = {"phase": phase, "arm": arm, "budget": None if arm in ("dense", "tfmot_dense") else budget,
            "seed": seed, "epochs": epochs, "model": MODEL, "width": WIDTH, "dataset": DATASET,
            "train_split": TRAIN_SPLIT, "validation_split": VALIDATION_SPLIT,
            "test_split": TEST_SPLIT, **RECIPE,
            "jit_compile": bool(FLAGS.jit_compile) and arm in KERAS3_ARMS}
    spec["name"] = run_name(spec)
    return spec


# --------------------------------------------------------------------------- arms


def _dense(seed):
    import keras  # pylint: disable=g-import-not-at-top
    from tf_precrop import data  # pylint: disable=g-import-not-at-top

    info = data.info(DATASET)
    keras.utils.set_random_seed(seed)
    return common.build_model(MODEL, info.input_shape, info.num_classes, WIDTH)


def uniform_macs_ratio(dense, budget):
    """The MACs ratio uniform width actually reaches at ``budget`` (the other arms' budget)."""
    import tf_precrop  # pylint: disable=g-import-not-at-top

    return tf_precrop.plan(dense, flops=budget, uniform=True).macs_ratio


def build_arm(spec):
    """The model an arm trains: (model, info dict, is_tfmot)."""
    import tf_precrop  # pylint: disable=g-import-not-at-top
    from tf_precrop import sparsity  # pylint: disable=g-import-not-at-top

    seed, arm = spec["seed"], spec["arm"]
    dense = _dense(seed)
    dense_cost = tf_precrop.count(dense)
    extra = {"dense_macs": dense_cost.macs, "dense_params": dense_cost.params}
    if arm == "dense":
        model = dense
    elif arm == "uniform":
        model = tf_precrop.crop(dense, flops=spec["budget"], uniform=True, seed=seed)
    elif arm == "precrop":
        target = uniform_macs_ratio(dense, spec["budget"])
        extra["macs_target"] = target
        model = tf_precrop.crop(dense, flops=target, seed=seed)
    elif arm == "random_width":
        target = uniform_macs_ratio(dense, spec["budget"])
        extra["macs_target"] = target
        plan, widths = random_width_plan(dense, target, seed)
        extra["random_widths"] = widths
        model = tf_precrop.crop(dense, plan, seed=seed)
    elif arm == "precrop_latency":
        latency_model, budget = frozen_latency_budget(spec["budget"])
        extra["latency_budget"] = budget
        model = tf_precrop.crop(dense, latency=budget, latency_model=latency_model, seed=seed)
    else:
        if arm == "tfmot_dense":  # every prunable kernel wrapped, nothing pruned
            masks = {k.key: np.ones(k.shape, np.float32) for k in sparsity.prunable_kernels(dense)}
        else:
            target = uniform_macs_ratio(dense, spec["budget"])
            extra["macs_target"] = target
            masks = sparsity.compute_masks(arm, dense, flops=target, seed=seed)
        masked = sparsity.masked_cost(dense, masks)
        model = sparsity.to_tfmot(dense, masks)
        extra.update(macs=int(masked["macs"]), params=int(masked["params"]),
                     executed_macs=dense_cost.macs, executed_params=dense_cost.params)
        return model, extra, True
    cost = tf_precrop.count(model)
    extra.update(macs=cost.macs, params=cost.params, executed_macs=cost.macs,
                 executed_params=cost.params)
    return model, extra, False


def random_width_plan(dense, target, seed, low=0.1):
    """A random width configuration at ``target`` MACs ratio, as a CropPlan.

    Every croppable channel group draws a ratio uniformly in [low, 1]; one shared
    factor (bisection) scales them so that the integer widths meet ``target`` (the
    largest factor whose MACs stay within it). tf_precrop has no public way to turn
    given widths into a plan yet (issue 14 asks for ``plan_from_widths``), so this
    helper uses the planner's internals (ModelGraph, make_plan); it lives in the
    benchmark, not the library.

    Returns:
        (CropPlan, {group id: width}).
    """
    import types  # pylint: disable=g-import-not-at-top

    import tf_precrop  # pylint: disable=g-import-not-at-top
    from tf_precrop.graph import ModelGraph  # pylint: disable=g-import-not-at-top
    from tf_precrop.graph import registry  # pylint: disable=g-import-not-at-top
    from tf_precrop.plan import make_plan  # (the attribute tf_precrop.plan is the function)

    reference = tf_precrop.plan(dense, flops=target)  # the groups, and which are fixed
    graph = ModelGraph(dense)
    rng = np.random.default_rng(seed)
    free = [g for g in reference.groups if not g.fixed]
    draws = {g.id: rng.uniform(low, 1.0) for g in free}

    def plan_at(scale):
        widths = {g.id: g.dense_width for g in reference.groups}
        for g in free:
            widths[g.id] = int(min(g.dense_width, max(1, round(scale * draws[g.id] * g.dense_width))))
        solution = types.SimpleNamespace(widths=widths, continuous={}, fixed_reasons={},
                                         solve_seconds=0.0, round_seconds=0.0)
        return make_plan(graph, solution, budgets={registry.MACS: target}, round_to=1,
                                  max_ratio=1.0, uniform=False), widths

    lo, hi = 0.0, 1.0 / min(draws.values())
    for _ in range(40):
        mid = (lo + hi) / 2
        if plan_at(mid)[0].macs_ratio <= target:
            lo = mid
        else:
            hi = mid
    plan, widths = plan_at(lo)
    # Repair: whole channels are coarse steps at width 8, so add single channels to random groups
    # while the MACs stay within the target (as the solver's rounding does for PreCrop).
    grown = True
    while grown:
        grown = False
        for index in rng.permutation(len(free)):
            group = free[index]
            if widths[group.id] >= group.dense_width:
                continue
            trial = {**widths, group.id: widths[group.id] + 1}
            candidate = make_plan(
                graph, types.SimpleNamespace(widths=trial, continuous={}, fixed_reasons={},
                                             solve_seconds=0.0, round_seconds=0.0),
                budgets={registry.MACS: target}, round_to=1, max_ratio=1.0, uniform=False)
            if candidate.macs_ratio <= target:
                plan, widths, grown = candidate, trial, True
    return plan, {str(k): v for k, v in widths.items()}


# --------------------------------------------------------------------------- one run (child)


def _compile(model, spec, tfmot):
    model.compile(optimizer="sgd")  # the SGD class of the model's own framework (Keras 3 or tf_keras)
    sgd = type(model.optimizer)(learning_rate=spec["lr"], momentum=spec["momentum"],
                                nesterov=spec["nesterov"], weight_decay=spec["weight_decay"] or None)
    kwargs = {} if tfmot else {"jit_compile": spec["jit_compile"]}
    model.compile(optimizer=sgd, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  **kwargs)


def train_run(spec):
    """Trains one run in this process and writes its JSON record."""
    import keras  # pylint: disable=g-import-not-at-top
    from tf_precrop import data  # pylint: disable=g-import-not-at-top
    from tf_precrop import sparsity  # pylint: disable=g-import-not-at-top

    start = time.perf_counter()
    load_start = os.getloadavg()
    commit = runs_lib.git_commit()  # the code this run starts with
    batch = spec["batch_size"]
    train_ds = data.load(DATASET, spec["train_split"], batch, augment=True, data_dir=FLAGS.data_dir,
                         seed=spec["seed"])
    val_ds = data.load(DATASET, spec["validation_split"], batch, data_dir=FLAGS.data_dir, shuffle=False)
    test_ds = data.load(DATASET, spec["test_split"], batch, data_dir=FLAGS.data_dir, shuffle=False)
    steps = sum(1 for _ in train_ds)
    model, extra, tfmot = build_arm(spec)
    _compile(model, spec, tfmot)
    run_dir = os.path.join(FLAGS.work_dir, "runs", spec["name"])
    monitor = EpochRecorder(total_steps=spec["epochs"] * steps, base_lr=spec["lr"],
                            schedule=spec["schedule"], log_dir=os.path.join(run_dir, "logs"),
                            checkpoint_dir=os.path.join(run_dir, "checkpoints"))
    epochs = monitor
    callbacks = [monitor, *(sparsity.callbacks() if tfmot else [])]
    train_start = time.perf_counter()
    model.fit(train_ds, epochs=spec["epochs"], validation_data=val_ds, callbacks=callbacks, verbose=2)
    train_seconds = time.perf_counter() - train_start
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)  # the one look at the test set
    record = {
        **spec, **extra, "label": "PILOT" if spec["phase"] == "pilot" else "GRID",
        "macs_ratio": extra["macs"] / extra["dense_macs"],
        "params_ratio": extra["params"] / extra["dense_params"],
        "validation_accuracy": [e["val_accuracy"] for e in epochs.logs],
        "validation_loss": [e["val_loss"] for e in epochs.logs],
        "train_accuracy": [e["accuracy"] for e in epochs.logs],
        "epoch_seconds": epochs.seconds,
        "final_validation_accuracy": epochs.logs[-1]["val_accuracy"],
        "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
        "steps_per_epoch": steps,
        "step_time_median_s": float(np.median(monitor.step_times)),
        "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "git_commit": commit, "command": _command(),
        "keras_version": keras.__version__, "backend": keras.backend.backend(),
        "host": platform.node(), "cpus": os.cpu_count(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = record_path(spec)
    common.write_json(out, record)
    print(f"{spec['name']}: val {record['final_validation_accuracy']:.4f} test {test_accuracy:.4f} "
          f"MACs ratio {record['macs_ratio']:.3f}, {train_seconds:.0f} s; wrote {out}", flush=True)


class EpochRecorder(common.TrainMonitor):
    """TrainMonitor that also keeps every epoch's logs (validation accuracy) and wall time."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.logs, self.seconds, self._epoch_start = [], [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._epoch_start)
        self.logs.append({k: float(v) for k, v in (logs or {}).items()})
        print(f"  epoch {epoch + 1}: val_accuracy {self.logs[-1].get('val_accuracy', float('nan')):.4f}, "
              f"{self.seconds[-1]:.0f} s, load {os.getloadavg()[0]:.2f}", flush=True)
        super().on_epoch_end(epoch, logs)


def _command():
    """The exact command line of this process, as one would type it from the repository root."""
    return shlex.join(["python", "-m", "benchmarks.confirmatory", *sys.argv[1:]])


def record_path(spec):
    sub = "pilot" if spec["phase"] == "pilot" else "confirmatory_runs"
    return os.path.join(FLAGS.results_dir, sub, f"{spec['name']}.json")


def launch(spec):
    """Runs one spec in a child process (without TF_USE_LEGACY_KERAS); returns its exit code."""
    run_dir = os.path.join(FLAGS.work_dir, "runs", spec["name"])
    os.makedirs(run_dir, exist_ok=True)
    spec_path = os.path.join(run_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2)
    command = [sys.executable, "-m", "benchmarks.confirmatory", "--stage=run", f"--spec={spec_path}",
               f"--data_dir={FLAGS.data_dir}", f"--work_dir={FLAGS.work_dir}",
               f"--results_dir={FLAGS.results_dir}"]
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} start {spec['name']} "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    with open(os.path.join(run_dir, "train.log"), "w") as log:
        code = subprocess.call(command, env=runs_lib.child_env(), stdout=log, stderr=subprocess.STDOUT)
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {spec['name']}: "
          f"{'done' if code == 0 else f'FAILED (exit {code}), see {run_dir}/train.log'}", flush=True)
    return code


def _past_stop():
    if not FLAGS.stop_at:
        return False
    return time.strftime("%H:%M", time.gmtime()) >= FLAGS.stop_at


def pilot_specs():
    specs = []
    if "curve" in FLAGS.pilot_plan:
        specs.append(make_spec("pilot", "dense", None, PILOT_SEED_MIN, FLAGS.curve_epochs))
    if "sd" in FLAGS.pilot_plan:
        for seed in (int(s) for s in FLAGS.pilot_seeds):
            for arm in FLAGS.pilot_arms:
                specs.append(make_spec("pilot", arm, 0.25, seed, FLAGS.pilot_epochs))
    return specs


def run_pilot():
    runs_lib.prepare_fashion_mnist(FLAGS.data_dir)
    for spec in pilot_specs():
        if os.path.exists(record_path(spec)):
            continue
        if _past_stop():
            print(f"pilot: past --stop_at={FLAGS.stop_at} UTC; no new run started", flush=True)
            return
        launch(spec)


def measure_training_speed():
    """Interleaved training speed of the Keras 3 setups; writes results/pilot_training_speed.json.

    Setups: dense and uniform width at flops 0.25, each with XLA (`jit_compile=True`) and
    without (Keras 3's "auto" means no XLA on a CPU-only TensorFlow), trained with the
    recipe's pipeline (`tf_precrop.data.load`: decoded images cached in memory, augmentation
    in parallel map calls, `prefetch(AUTOTUNE)`) and the recipe's batch size; plus the input
    pipeline alone, to see whether it could be the bottleneck. The setups take turns
    (--speed_rounds rounds of --speed_steps steps each, order reversed every other round),
    so load changes on the shared machine hit all alike.
    """
    import keras  # pylint: disable=g-import-not-at-top
    from tf_precrop import data  # pylint: disable=g-import-not-at-top

    runs_lib.prepare_fashion_mnist(FLAGS.data_dir)
    commit = runs_lib.git_commit()
    batch, steps = RECIPE["batch_size"], FLAGS.speed_steps
    train_ds = data.load(DATASET, TRAIN_SPLIT, batch, augment=True, data_dir=FLAGS.data_dir,
                         seed=PILOT_SEED_MIN)
    for _ in train_ds:  # one full pass fills the in-memory cache, as the first epoch of a run does
        pass
    train_ds = train_ds.repeat()

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self._start = [], None

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    setups = {}
    for arm in ("dense", "uniform"):
        for jit in (False, True):
            spec = make_spec("pilot", arm, 0.25, PILOT_SEED_MIN, 1)
            spec["jit_compile"] = jit
            model, _, _ = build_arm(spec)
            _compile(model, spec, tfmot=False)
            setups[f"{arm} f0.25 jit_compile={jit}" if arm != "dense" else f"dense jit_compile={jit}"] = model
    times = {name: [] for name in setups}
    times["input pipeline alone"] = []
    loads = [os.getloadavg()]
    for model in setups.values():  # tracing / XLA compilation, not timed
        model.fit(train_ds, steps_per_epoch=5, epochs=1, verbose=0)
    names = list(times)
    for round_index in range(FLAGS.speed_rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            if name == "input pipeline alone":
                iterator = iter(train_ds)
                for _ in range(steps):
                    begin = time.perf_counter()
                    next(iterator)
                    times[name].append(time.perf_counter() - begin)
                continue
            timer = StepTimer()
            setups[name].fit(train_ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
            times[name] += timer.times[1:]
            print(f"  round {round_index}: {name}: {1e3 * np.median(timer.times[1:]):.1f} ms/step "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
        loads.append(os.getloadavg())
    result = {
        "label": "PILOT (training-speed measurement)",
        "setups": {name: {"median_ms": 1e3 * float(np.median(t)), "mean_ms": 1e3 * float(np.mean(t)),
                          "p10_ms": 1e3 * float(np.percentile(t, 10)),
                          "p90_ms": 1e3 * float(np.percentile(t, 90)), "steps": len(t)}
                   for name, t in times.items()},
        "batch_size": batch, "steps_per_round": steps, "rounds": FLAGS.speed_rounds,
        "loadavg": loads, "git_commit": commit, "command": _command(), "keras_version": keras.__version__,
        "backend": keras.backend.backend(), "cpus": os.cpu_count(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = os.path.join(FLAGS.results_dir, "pilot_training_speed.json")
    common.write_json(path, result)
    for name, entry in result["setups"].items():
        print(f"{name}: median {entry['median_ms']:.1f} ms/step over {entry['steps']} steps")
    print(f"wrote {path}")


# --------------------------------------------------------------------------- latency model and budgets

LATENCY_MODEL_JSON = "confirmatory_latency_model.json"
LATENCY_BUDGETS_JSON = "confirmatory_latency_budgets.json"
LATENCY_TOLERANCE = 0.03
"""The latency arm's measured p50 must be within 3 % of uniform width's at the same point (issue 13)."""


def frozen_latency_budget(flops):
    """(LatencyModel, latency budget) frozen by --stage=latency for the point of uniform at ``flops``.

    Raises:
        FileNotFoundError: before --stage=latency has written both JSON files.
        KeyError: if the budget of that point was not frozen.
    """
    import tf_precrop  # pylint: disable=g-import-not-at-top

    paths = [os.path.join(FLAGS.results_dir, name) for name in (LATENCY_MODEL_JSON, LATENCY_BUDGETS_JSON)]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist: run `python -m benchmarks.confirmatory "
                                    "--stage=latency` first (on a quiet machine).")
    with open(paths[0]) as f:
        latency_model = tf_precrop.LatencyModel.from_json(json.dumps(json.load(f)["latency_model"]))
    with open(paths[1]) as f:
        budgets = json.load(f)["frozen"]
    return latency_model, budgets[f"{flops:g}"]


def calibrate_and_freeze(budgets=(0.25, 0.1, 0.5), factors=(0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1),
                         samples=12, num_runs=2000):
    """--stage=latency: a latency model of this machine and the latency arm's frozen budgets.

    1. Fits a `tf_precrop.LatencyModel` to randomly narrowed variants of the width-8 ResNet-20 on
       28x28x1, timed with LiteRT on 1 thread (`tf_precrop.export.calibrate_latency`, round_to=1 like
       the arms) -> results/confirmatory_latency_model.json.
    2. For each budget, exports uniform width and PreCrop with latency budgets around the latency model's
       prediction for uniform (``factors`` x it), times them interleaved with dense, and freezes the
       budget whose measured p50 is closest to uniform's (it must be within 3 %)
       -> results/confirmatory_latency_budgets.json, with every candidate's timings.
    Wants a quiet machine: run it when no training runs.
    """
    import tempfile  # pylint: disable=g-import-not-at-top

    import tf_precrop  # pylint: disable=g-import-not-at-top
    from tf_precrop import export  # pylint: disable=g-import-not-at-top

    commit, loads = runs_lib.git_commit(), [os.getloadavg()]
    dense = _dense(0)
    calibration = export.calibrate_latency(dense, samples=samples, round_to=1, num_threads=1, rounds=20,
                                           num_runs=num_runs // 2, log=print)
    latency_model = calibration.latency_model
    loads.append(os.getloadavg())
    common.write_json(os.path.join(FLAGS.results_dir, LATENCY_MODEL_JSON), {
        "label": "PILOT (latency calibration)", "latency_model": json.loads(latency_model.to_json()),
        "rows": calibration.rows, "max_relative_error": calibration.max_relative_error,
        "model": f"{MODEL} width {WIDTH}, input 28x28x1, batch 1, LiteRT 1 thread",
        "git_commit": commit, "command": _command(), "loadavg": loads})
    dense_ms = latency_model.predict_ms(dense)
    frozen, points = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for flops in budgets:
            uniform = tf_precrop.crop(dense, flops=flops, uniform=True, seed=0)
            predicted = latency_model.predict_ms(uniform) / dense_ms
            models = {"dense": dense, "uniform": uniform}
            for factor in factors:
                target = min(1.0, predicted * factor)
                try:
                    models[f"latency={target:.4f}"] = tf_precrop.crop(
                        dense, latency=target, latency_model=latency_model, seed=0)
                except ValueError as err:  # a budget no allowed widths meet
                    print(f"flops={flops:g}: latency={target:.4f} infeasible ({err})")
            paths = []
            for name, model in models.items():
                path = os.path.join(tmp, f"f{flops:g}_{name}.tflite")
                export.to_tflite(model, path)
                paths.append(path)
            stats = export.benchmark_interleaved(paths, num_threads=1, warmup_runs=20, num_runs=num_runs,
                                                 rounds=40)
            loads.append(os.getloadavg())
            rows = {name: {**st, "macs_ratio": tf_precrop.count(models[name]).macs / tf_precrop.count(dense).macs}
                    for name, st in zip(models, stats)}
            uniform_p50 = rows["uniform"]["p50_ms"]
            candidates = {n: r for n, r in rows.items() if n.startswith("latency=")}
            best = min(candidates, key=lambda n: abs(candidates[n]["p50_ms"] / uniform_p50 - 1))
            within = abs(candidates[best]["p50_ms"] / uniform_p50 - 1) <= LATENCY_TOLERANCE
            points[f"{flops:g}"] = {"uniform_predicted_latency_ratio": predicted, "rows": rows,
                                    "chosen": best, "within_tolerance": within}
            if within:
                frozen[f"{flops:g}"] = float(best.split("=")[1])
            print(f"flops={flops:g}: uniform p50 {uniform_p50:.3f} ms; closest {best} at "
                  f"{candidates[best]['p50_ms']:.3f} ms ({'within' if within else 'NOT within'} 3 %)")
    common.write_json(os.path.join(FLAGS.results_dir, LATENCY_BUDGETS_JSON), {
        "label": "PILOT (latency budgets, frozen for the grid)", "frozen": frozen, "points": points,
        "tolerance": LATENCY_TOLERANCE, "git_commit": commit, "command": _command(), "loadavg": loads,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


# --------------------------------------------------------------------------- pilot report and power

PRIMARY_TESTS = (
    "PreCrop - uniform at flops 0.25 (paired t, two-sided)",
    "PreCrop - uniform at flops 0.1 (paired t, two-sided)",
    "PreCrop - SynFlow at flops 0.25 (paired t, two-sided)",
    "PreCrop - SynFlow at flops 0.1 (paired t, two-sided)",
    "PreCrop(latency) - uniform at the latency-matched point of flops 0.25 (paired t, two-sided)",
    "PreCrop(latency) - uniform at the latency-matched point of flops 0.1 (paired t, two-sided)",
    "PreCrop - uniform equivalent within +-1 pp at flops 0.25 (TOST, paired)",
    "PreCrop - uniform equivalent within +-1 pp at flops 0.1 (TOST, paired)",
)
"""The closed list of primary tests the draft pre-registration proposes (Holm over all of them)."""


def load_records(directory):
    records = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".json"):
                with open(os.path.join(directory, name)) as f:
                    records.append(json.load(f))
    return records


def power_lines(paired_sd=None):
    """The power table of the draft: seeds per arm for each assumed paired SD."""
    alpha = 0.05 / len(PRIMARY_TESTS)  # Holm's first step: the most demanding level in the family
    sds = sorted({0.8, 1.0, 1.2, 1.4, *([round(paired_sd, 2)] if paired_sd else [])})
    lines = [f"Per-test alpha for the power calculation: 0.05 / {len(PRIMARY_TESTS)} = {alpha:.5f} "
             "(Holm's first step over the primary tests; later steps are less demanding, so this is "
             "conservative). Power 0.8. Formulas: `benchmarks.stats.seeds_for_difference` and "
             "`seeds_for_equivalence` (normal approximation plus Guenther's correction, standard library "
             "only).", "",
             "| paired SD of PreCrop - uniform (pp) | seeds to detect 1.0 pp | seeds to detect 1.5 pp | "
             "seeds for TOST within +-1 pp (true difference 0) | effect detectable with 6 / 10 / 12 seeds (pp) |",
             "|---|---|---|---|---|"]
    for sd in sds:
        note = " (pilot)" if paired_sd and sd == round(paired_sd, 2) else ""
        lines.append(
            f"| {sd:.2f}{note} | {seeds_for_difference(sd, 1.0, alpha)} | {seeds_for_difference(sd, 1.5, alpha)} | "
            f"{seeds_for_equivalence(sd, 1.0, alpha)} | "
            + " / ".join(f"{detectable_effect(sd, n, alpha):.2f}" for n in (6, 10, 12)) + " |")
    return lines


def exploratory_paired_sds(archive="benchmarks/results/accuracy_runs"):
    """{(comparison, budget): (SD of the same-seed test-accuracy differences in pp, n)} of the 2-epoch archive."""
    import statistics  # pylint: disable=g-import-not-at-top

    def accuracy(method, budget, seed):
        path = os.path.join(archive, f"resnet20_{method}_f{budget}_s{seed}.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)["test_accuracy"]

    out = {}
    for other, label in (("uniform_width", "PreCrop - uniform"), ("synflow", "PreCrop - SynFlow")):
        for budget in ("0.5", "0.25", "0.1"):
            pairs = [(accuracy("precrop", budget, s), accuracy(other, budget, s)) for s in range(8)]
            diffs = [100 * (a - b) for a, b in pairs if a is not None and b is not None]
            if len(diffs) > 1:
                out[(label, budget)] = (statistics.stdev(diffs), len(diffs))
    return out


def write_pilot_page():
    """benchmarks/results/pilot.md from the pilot records and the training-speed JSON."""
    import statistics  # pylint: disable=g-import-not-at-top

    records = load_records(os.path.join(FLAGS.results_dir, "pilot"))
    lines = ["# PILOT of the confirmatory experiment (issue 13)", "",
             "> **Pilot, not results.** Seeds >= 1000, which the confirmatory grid never uses. These runs "
             "only choose the training length and the setup and size the grid (seed-to-seed SDs); their "
             "accuracies are not evidence for or against any hypothesis.", "",
             "Model ResNet-20 width 8 on Fashion-MNIST; training on the first 50,000 training images, "
             "validation on the last 10,000 (`train[50000:]`, fixed, never trained on), the test set "
             "evaluated once per run at the end. Recipe as the exploratory grid: batch "
             f"{RECIPE['batch_size']}, SGD momentum {RECIPE['momentum']} Nesterov, lr {RECIPE['lr']} "
             f"{RECIPE['schedule']}, decoupled weight decay {RECIPE['weight_decay']}. One training process at "
             "a time on the shared 2-core VM; its load average is in every record.", ""]
    speed_path = os.path.join(FLAGS.results_dir, "pilot_training_speed.json")
    if os.path.exists(speed_path):
        with open(speed_path) as f:
            speed = json.load(f)
        lines += ["## Training speed (Keras 3 arms)", "",
                  "| setup | median ms/step | p10-p90 ms | steps |", "|---|---|---|---|"]
        lines += [f"| {name} | {e['median_ms']:.1f} | {e['p10_ms']:.0f}-{e['p90_ms']:.0f} | {e['steps']} |"
                  for name, e in speed["setups"].items()]
        loads = ", ".join(f"{load[0]:.1f}" for load in speed["loadavg"])
        lines += ["", f"Interleaved ({speed['rounds']} rounds x {speed['steps_per_round']} steps per setup, "
                  f"batch {speed['batch_size']}, `{speed['command']}`, commit {speed['git_commit'][:10]}); "
                  f"1-minute load average {loads} (before, after each round): the other agents' tests "
                  "were running. XLA (`jit_compile=True`) was 3-4x slower than the default (no XLA on a "
                  "CPU-only TensorFlow) for both models, so every Keras 3 arm trains without XLA. The input "
                  "pipeline (`tf_precrop.data.load`: decoded images cached in memory, parallel augmentation, "
                  "`prefetch(AUTOTUNE)`) produces a batch in a fraction of a training step, so it is not the "
                  "bottleneck and needs no change.", ""]
    curve = [r for r in records if r["arm"] == "dense" and r["epochs"] == FLAGS.curve_epochs
             and r["seed"] == PILOT_SEED_MIN]
    lines += ["## Training length: dense validation curve", ""]
    if curve:
        run = curve[0]
        acc = run["validation_accuracy"]
        final = acc[-1]
        lines += [f"Run `{run['name']}` ({run['epochs']} epochs, cosine schedule over all of them), commit "
                  f"{str(run['git_commit'])[:10]}, load average {run['loadavg_start'][0]:.1f} at the start and "
                  f"{run['loadavg_end'][0]:.1f} at the end; test accuracy (once, at the end) "
                  f"{100 * run['test_accuracy']:.2f} %.", "",
                  "| epoch | validation accuracy (%) | epoch s |", "|---|---|---|"]
        lines += [f"| {i + 1} | {100 * a:.2f} | {t:.0f} |" for i, (a, t) in
                  enumerate(zip(acc, run["epoch_seconds"]))]
        within = next(i + 1 for i, a in enumerate(acc) if a >= final - 0.005)
        lines += ["", f"The {run['epochs']}-epoch run's final validation accuracy is {100 * final:.2f} %; it first "
                  f"comes within 0.5 pp of it at epoch {within}. Under a cosine schedule an intermediate epoch "
                  "of a long run is not a shorter run (the learning rate is still high there), so the length "
                  "is decided by the final validation accuracy of the shorter pilot runs below against this "
                  "run's.", ""]
    else:
        lines += ["Not finished yet.", ""]
    sd_runs = [r for r in records if r not in curve]
    lines += ["## Seed-to-seed variation at flops 0.25", ""]
    paired_sd = None
    if sd_runs:
        lines += ["| arm | epochs | seed | MACs ratio | final validation (%) | test (%) | train s | load start/end |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['arm']} | {r['epochs']} | {r['seed']} | {r['macs_ratio']:.3f} | "
                  f"{100 * r['final_validation_accuracy']:.2f} | {100 * r['test_accuracy']:.2f} | "
                  f"{r['train_seconds']:.0f} | {r['loadavg_start'][0]:.1f}/{r['loadavg_end'][0]:.1f} |"
                  for r in sorted(sd_runs, key=lambda r: (r["seed"], r["arm"]))]
        by_arm = {}
        for r in sd_runs:
            by_arm.setdefault((r["arm"], r["epochs"]), []).append(r)
        lines += ["", "| arm | epochs | n | validation mean ± SD (%) | test mean ± SD (%) |", "|---|---|---|---|---|"]
        for (arm, epochs), rs in sorted(by_arm.items()):
            val = [100 * r["final_validation_accuracy"] for r in rs]
            test = [100 * r["test_accuracy"] for r in rs]
            def sd(v):
                return f"{statistics.stdev(v):.2f}" if len(v) > 1 else "n < 2"
            lines.append(f"| {arm} | {epochs} | {len(rs)} | {statistics.fmean(val):.2f} ± {sd(val)} | "
                         f"{statistics.fmean(test):.2f} ± {sd(test)} |")
        pre = {r["seed"]: r for r in sd_runs if r["arm"] == "precrop"}
        uni = {r["seed"]: r for r in sd_runs if r["arm"] == "uniform"}
        pairs = sorted(set(pre) & set(uni))
        if pairs:
            diffs = [100 * (pre[s]["test_accuracy"] - uni[s]["test_accuracy"]) for s in pairs]
            vdiffs = [100 * (pre[s]["final_validation_accuracy"] - uni[s]["final_validation_accuracy"])
                      for s in pairs]
            text = (f"Paired differences PreCrop - uniform (same seed: same data order), n = {len(pairs)}: "
                    f"test {', '.join(f'{d:+.2f}' for d in diffs)} pp; validation "
                    f"{', '.join(f'{d:+.2f}' for d in vdiffs)} pp.")
            if len(pairs) > 1:
                paired_sd = statistics.stdev(diffs)
                text += f" SD of the test differences {paired_sd:.2f} pp."
            else:
                text += " One pair gives no SD yet."
            lines += ["", text]
        dense10 = [r for r in sd_runs if r["arm"] == "dense"]
        if curve and dense10:
            gap = 100 * (curve[0]["final_validation_accuracy"]
                         - statistics.fmean(r["final_validation_accuracy"] for r in dense10))
            verdict = ("within 0.5 pp: the shorter length reaches the plateau" if gap <= 0.5 else
                       "more than 0.5 pp: the shorter length is short of the plateau")
            lines += ["", f"Dense at {dense10[0]['epochs']} epochs vs the {FLAGS.curve_epochs}-epoch run: the "
                      f"{FLAGS.curve_epochs}-epoch run ends {gap:+.2f} pp higher in final validation accuracy, "
                      f"{verdict} ({len(dense10)} seed(s) at the shorter length, one at {FLAGS.curve_epochs}; "
                      "different seeds, so the gap includes seed noise)."]
        lines.append("")
    else:
        lines += ["Not run yet.", ""]
    planned = pilot_specs()
    missing = [spec["name"] for spec in planned if not os.path.exists(record_path(spec))]
    lines += ["## Status", "",
              f"{len(planned) - len(missing)} of the {len(planned)} runs of the pilot plan (`--pilot_plan="
              f"{','.join(FLAGS.pilot_plan)}`, seeds {FLAGS.pilot_seeds[0]}-{FLAGS.pilot_seeds[-1]}) are finished. "
              "It resumes with `nohup python -m benchmarks.confirmatory --stage=pilot > benchmarks/work/pilot.log "
              "2>&1 &` (finished runs are skipped), one training process at a time.", ""]
    old = exploratory_paired_sds()
    old_text = "; ".join(f"{label} at flops {b}: {sd:.2f} pp (n = {n})" for (label, b), (sd, n) in old.items())
    lines += ["## Power (for the pre-registration)", "", *power_lines(paired_sd), "",
              "For reference, the paired SDs (same seed) in the exploratory 2-epoch archive "
              f"(benchmarks/results/accuracy_runs/): {old_text}. Until the pilot has its own estimate at the "
              "confirmatory length, the rows 0.8-1.4 bracket them.", ""]
    path = os.path.join(FLAGS.results_dir, "pilot.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")


# --------------------------------------------------------------------------- grid (after registration)

PREREGISTRATION = "benchmarks/PREREGISTRATION.md"


def registered_design(path=PREREGISTRATION):
    """The grid design from the committed, unmodified pre-registration's ```json grid block.

    The block holds {"seeds": [...], "epochs": n, "primary": {"arms": [...], "budgets": [...]},
    "secondary": {"arms": [...], "budgets": [...]}}: the pre-registration is the only source of the
    grid, so the grid cannot drift from it.

    Raises:
        SystemExit: if the file is missing, not committed, modified since its commit, or has no block.
    """
    if not os.path.exists(path):
        sys.exit(f"confirmatory: {path} does not exist; the grid runs only after the pre-registration is "
                 "committed (issue 13). The draft is benchmarks/PREREGISTRATION_DRAFT.md.")
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path], capture_output=True).returncode == 0
    clean = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path]).returncode == 0
    if not (tracked and clean):
        sys.exit(f"confirmatory: {path} must be committed and unmodified before the grid runs.")
    with open(path) as f:
        text = f.read()
    marker = "```json grid"
    if marker not in text:
        sys.exit(f"confirmatory: {path} has no ```json grid block with the design.")
    block = text.split(marker, 1)[1].split("```", 1)[0]
    design = json.loads(block)
    if any(seed >= PILOT_SEED_MIN or seed < 8 for seed in design["seeds"]):
        sys.exit(f"confirmatory: grid seeds must be new: not 0-7 (exploratory) nor >= {PILOT_SEED_MIN} "
                 f"(pilot). Received: {design['seeds']}")
    return design


def grid_specs(design):
    """Primary runs first, seed by seed, then the secondary ones; dense-type arms once per seed."""
    specs = []
    for part in ("primary", "secondary"):
        for seed in design["seeds"]:
            for arm in design[part]["arms"]:
                budgets = [None] if arm in ("dense", "tfmot_dense") else design[part]["budgets"]
                for budget in budgets:
                    spec = make_spec("grid", arm, budget, seed, design["epochs"])
                    if spec["name"] not in {x["name"] for x in specs}:
                        specs.append(spec)
    return specs


def run_grid():
    design = registered_design()
    runs_lib.prepare_fashion_mnist(FLAGS.data_dir)
    specs = grid_specs(design)
    todo = [spec for spec in specs if not os.path.exists(record_path(spec))]
    print(f"grid: {len(specs)} runs, {len(specs) - len(todo)} finished, {len(todo)} to run", flush=True)
    for spec in todo:
        if _past_stop():
            print(f"grid: past --stop_at={FLAGS.stop_at} UTC; no new run started; "
                  f"{sum(not os.path.exists(record_path(s)) for s in specs)} runs remain", flush=True)
            return
        launch(spec)


def primary_tests(records, design):
    """The registered primary tests (PRIMARY_TESTS order): (label, n, diff pp, (low, high) pp, raw p)."""
    from benchmarks import stats  # pylint: disable=g-import-not-at-top

    def by_seed(arm, budget):
        return {r["seed"]: r["test_accuracy"] for r in records
                if r["arm"] == arm and r["budget"] == budget and r["epochs"] == design["epochs"]}

    out = []
    for label in PRIMARY_TESTS:
        budget = 0.25 if "0.25" in label else 0.1
        arm = "precrop_latency" if label.startswith("PreCrop(latency)") else "precrop"
        other = "synflow" if "SynFlow" in label else "uniform"
        a, b = by_seed(arm, budget), by_seed(other, budget)
        seeds = sorted(set(a) & set(b))
        x, y = [100 * a[s] for s in seeds], [100 * b[s] for s in seeds]
        diff, interval, p = stats.paired(x, y)
        if "TOST" in label:
            p = stats.tost_paired(x, y, 1.0) if len(seeds) > 1 else float("nan")
        out.append((label, len(seeds), diff, interval, p))
    return out


def write_grid_page():
    """results/confirmatory.md: per-arm summaries; the primary tests only once every registered run is in."""
    import statistics  # pylint: disable=g-import-not-at-top

    from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top

    from benchmarks import stats  # pylint: disable=g-import-not-at-top

    design = registered_design()
    specs = grid_specs(design)
    records = [r for r in load_records(os.path.join(FLAGS.results_dir, "confirmatory_runs"))
               if r["name"] in {s["name"] for s in specs}]
    primary = [s for s in grid_specs({**design, "secondary": {"arms": [], "budgets": []}})]
    done = {r["name"] for r in records}
    complete = all(s["name"] in done for s in primary)
    lines = ["# Confirmatory experiment (issue 13): PreCrop vs uniform width vs SynFlow", "",
             f"Design: {PREREGISTRATION} (registered before the first grid run). Runs finished: "
             f"{len(records)} of {len(specs)} ({sum(s['name'] in done for s in primary)} of {len(primary)} "
             "primary).", ""]
    if not complete:
        lines += ["> **PARTIAL.** The primary grid is not complete; as registered, no primary test is computed "
                  "until every primary run has finished. The table below only describes the finished runs.", ""]
    lines += ["| arm | budget | n | MACs ratio | test accuracy mean ± SD (%) | 95% CI (%) |",
              "|---|---|---|---|---|---|"]
    groups = {}
    for r in records:
        groups.setdefault((r["arm"], r["budget"]), []).append(r)
    for (arm, budget), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -(kv[0][1] or 1))):
        acc = [100 * r["test_accuracy"] for r in rs]
        mean = statistics.fmean(acc)
        if len(acc) > 1:
            sd = statistics.stdev(acc)
            half = scipy_stats.t.ppf(0.975, len(acc) - 1) * sd / len(acc) ** 0.5
            spread, ci = f"{sd:.2f}", f"[{mean - half:.2f}, {mean + half:.2f}]"
        else:
            spread, ci = "-", "-"
        lines.append(f"| {arm} | {'-' if budget is None else f'{budget:g}'} | {len(rs)} | "
                     f"{statistics.fmean(r['macs_ratio'] for r in rs):.3f} | {mean:.2f} ± {spread} | {ci} |")
    if complete:
        tests = primary_tests(records, design)
        adjusted = stats.holm([t[4] for t in tests])
        lines += ["", "## Primary tests (registered; Holm over all of them)", "",
                  "| test | n | mean paired difference (pp) | 95% CI (pp) | raw p | Holm p |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {label} | {n} | {diff:+.2f} | [{low:+.2f}, {high:+.2f}] | {p:.4f} | {q:.4f} |"
                  for (label, n, diff, (low, high), p), q in zip(tests, adjusted)]
    lines.append("")
    path = os.path.join(FLAGS.results_dir, "confirmatory.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")


def main(argv):
    del argv
    if FLAGS.stage == "run":
        with open(FLAGS.spec) as f:
            train_run(json.load(f))
    elif FLAGS.stage == "pilot":
        run_pilot()
    elif FLAGS.stage == "speed":
        measure_training_speed()
    elif FLAGS.stage == "latency":
        calibrate_and_freeze()
    elif FLAGS.stage == "report":
        write_pilot_page()
        if os.path.exists(PREREGISTRATION):
            write_grid_page()
    elif FLAGS.stage == "grid":
        run_grid()
    else:
        raise NotImplementedError(FLAGS.stage)


if __name__ == "__main__":
    app.run(main)
