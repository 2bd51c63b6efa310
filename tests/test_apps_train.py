"""End-to-end tests of `apps.train` on mock tfds data: every kind of method, outputs, errors.

Tiny runs: ResNet-20 at width 4 on mocked 28x28x1 Fashion-MNIST, 64 training
examples in batches of 16, one or two epochs.
"""

import json
import os
import subprocess
import sys
import textwrap

from absl import app
from absl import flags
import numpy as np
import pytest
import tensorflow_datasets as tfds

from apps import train
import tf_precrop
from tf_precrop import sparsity

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model=resnet20", "--width=4", "--dataset=fashion_mnist", "--batch_size=16",
        "--train_take=64", "--test_take=32", "--verbose=0"]


# Every test parses its own flags (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_flags")


def _train(tmp_path, *args, epochs=1):
    model_dir = str(tmp_path / "run")
    FLAGS(["apps.train", *TINY, f"--epochs={epochs}", f"--model_dir={model_dir}", *args])
    with tfds.testing.mock_data(num_examples=64):
        train.main([])
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f), model_dir


def test_dense_writes_results_logs_and_checkpoint(tmp_path):
    results, model_dir = _train(tmp_path, "--method=dense", epochs=2)
    dense = tf_precrop.count(tf_precrop.models.resnet20(input_shape=(28, 28, 1), width=4))
    assert (results["macs"], results["params"]) == (dense.macs, dense.params)
    assert results["executed_macs"] == results["dense_macs"] == dense.macs
    assert results["steps_per_epoch"] == 4 and results["steps_timed"] == 2 * 4 - 1
    assert 0 < results["step_time_mean_s"] < results["train_seconds"] < results["wall_seconds"]
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["flags"]["epochs"] == 2 and results["flags"]["method"] == "dense"
    assert "verbosity" not in results["flags"]  # absl's own flags are left out
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert [f for f in os.listdir(os.path.join(model_dir, "logs")) if "tfevents" in f]


@pytest.mark.parametrize("method, low, high", [
    ("precrop", 0.45, 0.5), ("uniform_width", 0.4, 0.5), ("preconfig", 0.98, 1.0)])
def test_structured_methods_train_a_resized_model(tmp_path, method, low, high):
    budget = [] if method == "preconfig" else ["--flops=0.5"]
    results, _ = _train(tmp_path, f"--method={method}", *budget)
    assert low <= results["macs_ratio"] <= high
    assert results["executed_macs"] == results["macs"]  # no masks: what is counted runs


def test_sparse_method_trains_through_tfmot(tmp_path):
    results, _ = _train(tmp_path, "--method=synflow", "--flops=0.5")
    assert 0.45 <= results["macs_ratio"] <= 0.5
    assert results["executed_macs"] == results["dense_macs"]  # masks keep the dense shapes
    assert results["params"] < results["executed_params"]


def test_masks_from_file(tmp_path):
    model = tf_precrop.models.resnet20(input_shape=(28, 28, 1), width=4)
    masks = sparsity.random_masks(model, {"stage3_block3_conv2/kernel": 0.25}, granularity="filter")
    path = str(tmp_path / "masks.npz")
    np.savez(path, **masks)
    results, _ = _train(tmp_path, "--method=masks", f"--masks={path}")
    expected = sparsity.masked_cost(model, masks)
    assert (results["macs"], results["params"]) == (expected["macs"], expected["params"])


@pytest.mark.parametrize("argv, message", [
    (["--method=bogus"], "flag --method=bogus: value should be one of <dense|precrop|preconfig|"
                         "uniform_width|synflow|snip|grasp|magnitude|random|erk|optimal|"
                         "synflow_random|masks>"),
    (["--dataset=svhn"], "flag --dataset=svhn: value should be one of "
                         "<cifar10|cifar100|fashion_mnist|imagenet2012|mnist>"),
    (["--flops=0"], "flag --flops=0.0: --flops must be a positive ratio of the dense MACs"),
    (["--epochs=0"], "flag --epochs=0: 0 is not a positive integer"),
])
def test_bad_flags_are_rejected_when_parsed(argv, message):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        FLAGS(["apps.train", *argv])
    assert str(error.value) == message


@pytest.mark.parametrize("argv, message", [
    (["--method=precrop", "--flops=1.5"],
     "--flops must be in (0, 1] unless --method=preconfig (the other methods only shrink). "
     "Received: --method=precrop --flops=1.5"),
    (["--method=synflow"], "--method=synflow needs a budget: pass --flops and/or --params."),
    (["--method=masks"], "--masks goes with --method=masks, and --method=masks needs --masks. "
                         "Received: --method=masks --masks=None"),
])
def test_bad_flag_combinations_are_usage_errors(argv, message):
    FLAGS(["apps.train", *argv])
    with pytest.raises(app.UsageError) as error:
        train.main([])
    assert str(error.value) == message


def test_multi_worker_is_refused_with_the_reason():
    FLAGS(["apps.train", "--distribution=multi_worker"])
    with pytest.raises(app.UsageError) as error:
        train.main([])
    assert str(error.value) == (
        "--distribution=multi_worker is not supported: Keras 3 `fit` under "
        "tf.distribute.MultiWorkerMirroredStrategy fails in Keras itself (\"Attempt to convert a value "
        "(PerReplica...)\", an open Keras 3 bug). Train on one machine's devices with --distribution=mirrored "
        "(TensorFlow) or --distribution=data_parallel (KERAS_BACKEND=jax); see docs/apps.md.")


def test_data_parallel_needs_jax():
    FLAGS(["apps.train", "--distribution=data_parallel", "--method=precrop", "--flops=0.5"])
    with pytest.raises(app.UsageError, match=r"^--distribution=data_parallel needs the JAX backend .* "
                                             r"Received: backend 'tensorflow'$"):
        train.main([])


def _train_in_subprocess(tmp_path, setup, distribution, env=()):
    """Runs a tiny precrop training with --distribution in a fresh process after `setup` code."""
    model_dir = str(tmp_path / "run")
    script = textwrap.dedent(setup) + textwrap.dedent(f"""
        import runpy, sys
        import tensorflow_datasets as tfds
        sys.argv = ["apps.train", *{TINY!r}, "--epochs=1", "--distribution={distribution}",
                    "--method=precrop", "--flops=0.5", "--model_dir={model_dir}"]
        with tfds.testing.mock_data(num_examples=64):
            runpy.run_module("apps.train", run_name="__main__")
    """)
    child_env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    child_env.update(env)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["replicas"] == 2
    assert results["flags"]["distribution"] == distribution
    assert results["steps_per_epoch"] == 4 and results["steps_timed"] == 3
    return results, model_dir


def test_data_parallel_over_two_jax_cpu_devices(tmp_path):
    """keras.distribution.DataParallel on the JAX backend, two host CPU devices."""
    results, model_dir = _train_in_subprocess(tmp_path, """
        import jax
        assert len(jax.devices()) == 2, jax.devices()
    """, "data_parallel", env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert 0.4 < results["macs_ratio"] <= 0.5
    assert os.listdir(os.path.join(model_dir, "checkpoints")) == ["ckpt-1.weights.h5"]


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    """Logical devices must be configured before TensorFlow initialises: hence the subprocess."""
    _train_in_subprocess(tmp_path, """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """, "mirrored")
