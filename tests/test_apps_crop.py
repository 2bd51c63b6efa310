"""End-to-end tests of `apps.crop` (offline, no data): outputs, PreConfig mode, flag errors."""

import json
import os
import re

from absl import app
from absl import flags
import keras
import pytest

import tf_precrop
from apps import crop

FLAGS = flags.FLAGS


# Every test parses its own flags (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_flags")


def _run(*args):
    FLAGS(["apps.crop", *args])
    crop.main([])


def test_keras_application_offline_writes_every_output(tmp_path, capsys):
    paths = {name: str(tmp_path / name) for name in ("small.keras", "widths.png", "plan.json")}
    _run("--model=mobilenet_v2", "--input_shape=64,64,3", "--num_classes=10", "--flops=0.5",
         "--round_to=8", f"--save={paths['small.keras']}", f"--plot={paths['widths.png']}",
         f"--json={paths['plan.json']}")
    out = capsys.readouterr().out
    with open(paths["plan.json"]) as f:
        plan = tf_precrop.CropPlan.from_json(f.read())
    assert 0.45 <= plan.macs_ratio <= 0.5
    assert plan.summary() in out
    assert re.search(r"^mobilenetv2_1\.00_64: MACs [\d.]+M -> [\d.]+M \(0\.\d{3}x\), params "
                     r"[\d.]+M -> [\d.]+M \(0\.\d{3}x\), planned in [\d.]+ s \(geometric program "
                     r"[\d.]+ s\)$", out, re.MULTILINE)
    small = keras.saving.load_model(paths["small.keras"])
    assert small.count_params() == plan.params
    assert tf_precrop.count(small).macs == plan.macs
    assert all(w % 8 == 0 for name, w in plan.widths.items() if name != "predictions")
    assert 10_000 < os.path.getsize(paths["widths.png"]) < 300_000


def test_preconfig_mode_keeps_the_dense_cost(tmp_path):
    path = str(tmp_path / "plan.json")
    _run("--model=resnet20", "--mode=preconfig", "--max_ratio=1.5", f"--json={path}")
    with open(path) as f:
        plan = json.load(f)
    assert plan["budgets"]["flops"] == 1.0 and plan["max_ratio"] == 1.5
    assert 0.98 <= plan["macs"] / plan["dense_macs"] <= 1.0


def test_flops_above_one_points_to_preconfig():
    with pytest.raises(app.UsageError) as error:
        _run("--model=resnet20", "--flops=1.5")
    assert str(error.value) == ("--flops must be in (0, 1] with --mode=crop (it only shrinks); use "
                                "--mode=preconfig to let layers grow. Received: --flops=1.5")


def test_crop_without_budget_is_a_usage_error():
    with pytest.raises(app.UsageError) as error:
        _run("--model=resnet20")
    assert str(error.value) == "--mode=crop needs a budget: pass --flops, --params and/or --latency."


@pytest.mark.parametrize("argv, message", [
    (["--flops=-0.5"], "flag --flops=-0.5: --flops must be a positive ratio of the dense MACs"),
    (["--input_shape=64,64"], "flag --input_shape=['64', '64']: --input_shape must be three "
                              "positive integers, e.g. --input_shape=224,224,3"),
    (["--mode=shrink"], "flag --mode=shrink: value should be one of <crop|preconfig>"),
])
def test_bad_flags_are_rejected_when_parsed(argv, message):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        FLAGS(["apps.crop", *argv])
    assert str(error.value) == message


def test_unknown_model_is_a_flag_error_listing_the_choices():
    with pytest.raises(flags.IllegalFlagValueError, match=re.escape(
            "flag --model=resnet21: --model must name a known model (case-insensitive, '_'/'-' ignored): ")) as error:
        FLAGS(["apps.crop", "--model=resnet21", "--flops=0.5"])
    assert "resnet20" in str(error.value) and "mobilenetv2" in str(error.value)


@pytest.mark.parametrize("app_module", ["apps.crop", "apps.train"])
def test_help_lists_the_shared_flags(app_module):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", app_module, "--help"], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"})
    assert "Traceback" not in done.stderr, done.stderr[-2000:]  # (absl exits 1 after --help)
    for flag in ("--model", "--flops", "--params", "--round_to", "--seed", "--width", "--max_ratio"):
        assert f"\n  {flag}:" in done.stdout, flag


def test_unknown_model_in_a_subprocess_is_not_a_traceback():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "apps.crop", "--model=resnet21", "--flops=0.5"],
                          capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "FATAL Flags parsing error: flag --model=resnet21: --model must name a known model" in done.stderr


def test_width_only_for_cifar_resnets():
    with pytest.raises(ValueError) as error:
        _run("--model=mobilenet_v2", "--width=8", "--flops=0.5")
    assert str(error.value) == ("--width applies to resnet20, resnet32, resnet56 only. "
                                "Received: model='mobilenet_v2', width=8")


def test_saved_model_path_with_a_params_budget(tmp_path, capsys):
    path = str(tmp_path / "mine.keras")
    tf_precrop.models.resnet20(input_shape=(28, 28, 1), width=8, name="mine").save(path)
    _run(f"--model_path={path}", "--params=0.3")
    assert re.search(r"^mine: MACs .* params [\d.]+K -> [\d.]+K \(0\.(2\d\d|300)x\)",
                     capsys.readouterr().out, re.MULTILINE)


def test_latency_budget_with_a_latency_model_file(tmp_path, capsys):
    rates = tf_precrop.LatencyModel(0.01, 0.03, 0.2, 500.0, name="phone")
    (tmp_path / "phone.json").write_text(rates.to_json())
    path = str(tmp_path / "plan.json")
    _run("--model=resnet20", "--latency=0.5", f"--latency_model={tmp_path / 'phone.json'}", f"--json={path}")
    with open(path) as f:
        plan = tf_precrop.CropPlan.from_json(f.read())
    assert plan.budgets["latency"] == 0.5 and plan.latency_model == "phone"
    assert 0.45 <= plan.latency_ratio <= 0.5
    assert re.search(r"params [\d.]+K -> [\d.]+K \(0\.\d{3}x\), predicted latency [\d.]+ ms -> [\d.]+ ms "
                     r"\(0\.\d{3}x\), planned in", capsys.readouterr().out)


def test_latency_flag_errors(tmp_path):
    with pytest.raises(ValueError, match=re.escape("Received: latency=0.5, latency_model=None")):
        _run("--model=resnet20", "--latency=0.5")
    with pytest.raises(app.UsageError, match=re.escape("Received: --latency_model=/nonexistent.json")):
        _run("--model=resnet20", "--flops=0.5", "--latency_model=/nonexistent.json")
    with pytest.raises(app.UsageError) as error:
        _run("--model=resnet20", "--mode=preconfig", "--latency=0.5")
    assert str(error.value) == "--latency works with --mode=crop only. Received: --latency=0.5"
