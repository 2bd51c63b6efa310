"""`apps.prune` and fine-tuning with `apps.train --init_from / --teacher` (tiny models, mock data)."""

import json
import os

from absl import app
from absl import flags
from absl.testing import flagsaver
import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from apps import prune
from apps import train
import tf_precrop

FLAGS = flags.FLAGS
TINY = ["--model=resnet20", "--width=4", "--dataset=fashion_mnist", "--batch_size=16",
        "--train_take=32", "--test_take=16", "--verbose=0", "--epochs=1", "--validation_freq=0"]


@pytest.fixture(autouse=True)
def _fresh_flags():
    with flagsaver.flagsaver():
        FLAGS.unparse_flags()
        yield
    FLAGS.unparse_flags()


@pytest.fixture
def trained(tmp_path):
    keras.utils.set_random_seed(0)
    model = tf_precrop.models.resnet20(input_shape=(28, 28, 1), width=4, num_classes=10)
    path = str(tmp_path / "trained.keras")
    model.save(path)
    return model, path


def _prune(*args):
    FLAGS.unparse_flags()
    FLAGS(["apps.prune", *args])
    prune.main([])


def test_prune_writes_the_pruned_model(tmp_path, trained, capsys):
    model, path = trained
    out_path = str(tmp_path / "pruned.keras")
    _prune(f"--model_path={path}", "--flops=0.5", "--importance=l1", "--round_to=2", f"--save={out_path}")
    out = capsys.readouterr().out
    pruned = keras.saving.load_model(out_path)
    expected = tf_precrop.prune(model, flops=0.5, round_to=2)
    for a, b in zip(pruned.get_weights(), expected.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "Importance kept per pruned group (importance=l1, reduction=sum)" in out
    assert "resnet20: MACs " in out and f"Wrote model to {out_path}" in out


def test_prune_with_a_plan_json_and_uniform(tmp_path, trained):
    model, path = trained
    plan = tf_precrop.plan(model, flops=0.4, uniform=True)
    plan_path = str(tmp_path / "plan.json")
    with open(plan_path, "w") as f:
        f.write(plan.to_json())
    out_path = str(tmp_path / "pruned.keras")
    _prune(f"--model_path={path}", f"--plan_json={plan_path}", "--importance=bn", f"--save={out_path}")
    assert tf_precrop.count(keras.saving.load_model(out_path)).macs == plan.macs


def test_prune_flag_errors(tmp_path, trained):
    _, path = trained
    with pytest.raises(app.UsageError, match="^--model_path is required"):
        _prune("--flops=0.5")
    with pytest.raises(app.UsageError, match="^apps.prune needs a budget"):
        _prune(f"--model_path={path}")
    with pytest.raises(app.UsageError, match=r"^--plan_json fixes the widths: pass it without --flops"):
        _prune(f"--model_path={path}", "--plan_json=p.json", "--flops=0.5")


def _train(tmp_path, *args):
    model_dir = str(tmp_path / "run")
    FLAGS(["apps.train", *TINY, f"--model_dir={model_dir}", *args])
    with tfds.testing.mock_data(num_examples=32):
        train.main([])
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f), model_dir


def test_train_init_from_keeps_the_pruned_weights_and_distills(tmp_path, trained):
    model, path = trained
    pruned = tf_precrop.prune(model, flops=0.5)
    pruned_path = str(tmp_path / "pruned.keras")
    pruned.save(pruned_path)
    saved = str(tmp_path / "finetuned.keras")
    results, model_dir = _train(tmp_path, f"--init_from={pruned_path}", f"--teacher={path}",
                                "--distill_alpha=0.7", "--temperature=2", "--lr=0.0", f"--save_model={saved}")
    finetuned = keras.saving.load_model(saved)  # the student, trained at lr 0: the pruned weights
    for a, b in zip(finetuned.trainable_weights, pruned.trainable_weights):  # (BN statistics move)
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    cost = tf_precrop.count(pruned)
    assert (results["macs"], results["params"]) == (cost.macs, cost.params)
    assert results["dense_macs"] == tf_precrop.count(model).macs
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["flags"]["teacher"] == path and results["flags"]["distill_alpha"] == 0.7
    assert [f for f in os.listdir(os.path.join(model_dir, "logs")) if "tfevents" in f]


def test_train_flag_errors(tmp_path, trained):
    _, path = trained
    FLAGS(["apps.train", *TINY, "--method=precrop", "--flops=0.5", f"--init_from={path}"])
    with pytest.raises(app.UsageError, match="^--init_from trains the saved model as it is"):
        train.check_flags()
    FLAGS.unparse_flags()
    FLAGS(["apps.train", *TINY, "--method=synflow", "--flops=0.5", f"--teacher={path}"])
    with pytest.raises(app.UsageError, match=r"^--teacher works with the Keras 3 \(structured\) methods"):
        train.check_flags()


def test_distiller_teacher_stays_frozen_and_alpha_zero_is_the_task_loss():
    keras.utils.set_random_seed(0)
    teacher = tf_precrop.models.resnet20(input_shape=(8, 8, 3), width=4, num_classes=3)
    student = tf_precrop.prune(teacher, flops=0.5)
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    y = np.arange(8) % 3
    before = [w.copy() for w in teacher.get_weights()]
    distiller = tf_precrop.Distiller(student, teacher, alpha=0.5, temperature=4.0)
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    plain = tf_precrop.Distiller(student, teacher, alpha=0.0)
    plain.compile(loss="sparse_categorical_crossentropy")
    student.compile(loss="sparse_categorical_crossentropy")
    assert plain.evaluate(x, y, verbose=0) == pytest.approx(student.evaluate(x, y, verbose=0), rel=1e-6)
    with pytest.raises(ValueError, match=r"^`alpha` must be in \[0, 1\]\. Received: alpha=1.5$"):
        tf_precrop.Distiller(student, teacher, alpha=1.5)
