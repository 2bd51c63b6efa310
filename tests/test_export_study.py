"""Equal-FLOPs latency study (tf_precrop.export.study) and its front end, apps.benchmark."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import tf_precrop
from tf_precrop.export import study

REPO = pathlib.Path(__file__).parent.parent


def test_parse_arms_puts_dense_first_and_applies_round_to():
    arms = study.parse_arms(["precrop:1", "precrop", "uniform", "synflow", "dense", "precrop:8"], round_to=8)
    assert [a.label for a in arms] == ["dense", "precrop r1", "precrop r8", "uniform r8", "synflow"]
    assert arms[1] == study.Arm("precrop", 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("magnitude", "Unknown method 'magnitude' in methods; choose from ('dense', 'precrop', 'precrop_latency', "
                      "'uniform', 'synflow'). Received: 'magnitude'"),
        ("synflow:8", "Method 'synflow' takes no round_to. Received: 'synflow:8'"),
        ("precrop:0", "round_to must be a positive integer. Received: 'precrop:0' (round_to='0')"),
        ("uniform:x", "round_to must be a positive integer. Received: 'uniform:x' (round_to='x')"),
    ],
)
def test_parse_arms_errors(spec, message):
    with pytest.raises(ValueError) as err:
        study.parse_arms([spec])
    assert str(err.value) == message


def _row(model, method, macs_ratio, latency_ratio, threads=1, shape=(224, 224, 3)):
    return {"model": model, "input_shape": list(shape), "method": method, "target_flops": macs_ratio,
            "macs": 1e6 * macs_ratio, "params": 1e3, "macs_ratio": macs_ratio, "size_bytes": 2048,
            "num_threads": threads, "p50_ms": latency_ratio, "p95_ms": latency_ratio,
            "latency_ratio": latency_ratio, "latency_over_macs": latency_ratio / macs_ratio}


def test_goal_check_takes_the_median_over_large_models_only():
    rows = [
        _row("mobilenet_v2", "precrop r8", 0.5, 0.52),    # 1.04
        _row("resnet50", "precrop r8", 0.5, 0.60),        # 1.20
        _row("resnet50", "precrop r8", 0.25, 0.27),       # 1.08
        _row("resnet50", "precrop r8", 0.25, 0.9, threads=2),
        _row("resnet20", "precrop r8", 0.5, 0.9, shape=(32, 32, 3)),
        _row("resnet50", "precrop r1", 0.5, 0.9),
    ]
    goal = study.goal_check(rows)
    assert goal["values"] == pytest.approx([1.04, 1.2, 1.08])
    assert goal["median"] == pytest.approx(1.08) and goal["holds"] is True
    assert study.goal_check(rows, limit=1.05)["holds"] is False
    assert study.goal_check([])["median"] is None


def test_report_files(tmp_path):
    rows = [_row("resnet20", "dense", 1.0, 1.0, shape=(32, 32, 3)),
            _row("resnet20", "precrop r8", 0.5, 0.6, shape=(32, 32, 3)),
            _row("resnet20", "synflow", 0.5, 0.97, shape=(32, 32, 3))]
    rows = [dict(r, path="/work/x.tflite") for r in rows]
    paths = study.write_report(rows, tmp_path, "lat", title="Latency", notes=["A note."])
    assert sorted(os.listdir(tmp_path)) == ["lat.csv", "lat.json", "lat.md", "lat.png"]
    md = pathlib.Path(paths["md"]).read_text().splitlines()
    assert md[0] == "# Latency"
    assert md[2].startswith("| model | method | target | MACs (M) | MACs/dense |")
    assert md[5] == ("| resnet20 | precrop r8 | 0.5 | 0.50 | 0.500 | 1.0 | 2 | 1 | 0.600 | 0.600 | 0.600 | 1.20 |")
    assert md[-1] == "A note."
    saved = json.loads(pathlib.Path(paths["json"]).read_text())
    assert "path" not in saved[0] and saved[1]["latency_ratio"] == 0.6
    assert pathlib.Path(paths["csv"]).read_text().splitlines()[2].startswith('resnet20,"[32, 32, 3]",precrop r8,')
    assert os.path.getsize(paths["png"]) < 300_000


def test_measure_needs_a_dense_record():
    with pytest.raises(ValueError) as err:
        study.measure([{"model": "resnet20", "method": "precrop r8", "path": "x.tflite"}])
    assert str(err.value) == "Model 'resnet20' has no 'dense' record to compare with."


def _app(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run([sys.executable, "-m", "apps.benchmark", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False, timeout=600)


def test_app_builds_exports_measures_and_reports(tmp_path):
    proc = _app("--model=resnet20", "--flops=0.5", "--methods=precrop", "--threads=1", "--round_to=8",
                "--num_runs=4", "--warmup_runs=1", "--rounds=2", f"--out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["benchmark_resnet20.csv", "benchmark_resnet20.json",
                                            "benchmark_resnet20.md", "benchmark_resnet20.png", "tflite"]
    assert sorted(os.listdir(tmp_path / "tflite")) == ["resnet20_dense_f1.tflite", "resnet20_precrop_r8_f0.5.tflite"]
    rows = json.loads((tmp_path / "benchmark_resnet20.json").read_text())
    assert [(r["method"], r["num_threads"], r["num_runs"]) for r in rows] == [("dense", 1, 4), ("precrop r8", 1, 4)]
    assert rows[0]["input_shape"] == [32, 32, 3]  # the model's default
    assert rows[0]["latency_ratio"] == 1.0 and rows[0]["macs_ratio"] == 1.0
    assert rows[0]["macs"] == tf_precrop.count(tf_precrop.models.resnet20()).macs == 40_813_184
    assert 0.45 < rows[1]["macs_ratio"] <= 0.5 and rows[1]["latency_ratio"] > 0
    assert all(r["max_abs_diff"] <= 1e-4 for r in rows)
    assert "| resnet20 | precrop r8 | 0.5 |" in proc.stdout


def test_app_rejects_bad_flags(tmp_path):
    proc = _app("--flops=1.5", f"--out_dir={tmp_path}")
    assert proc.returncode == 1
    assert "--flops ratios must be in (0, 1]. Received: [1.5]" in proc.stderr


def test_precrop_latency_arm_needs_a_latency_model_and_meets_its_target():
    model = tf_precrop.models.resnet20(width=8)
    arm = study.parse_arms(["precrop_latency:1"])[1]
    assert arm.label == "precrop_latency r1"
    with pytest.raises(ValueError) as err:
        study.build_arm(model, arm, 0.5)
    assert str(err.value) == "Arm 'precrop_latency' needs a latency model. Received: latency_model=None"
    rates = tf_precrop.LatencyModel(0.01, 0.01, 0.5, 100.0, name="t")
    small, cost, sparse = study.build_arm(model, arm, 0.5, latency_model=rates)
    assert cost["params"] == small.count_params() and not sparse
    assert rates.predict_ms(small) <= 0.5 * rates.predict_ms(model) * (1 + 1e-9)
    assert study.predicted_latency_ratio(model, arm, 0.5, rates) == pytest.approx(
        rates.predict_ms(small) / rates.predict_ms(model), rel=1e-9)
    assert study.predicted_latency_ratio(model, study.Arm("dense"), 1.0, rates) == 1.0
    assert study.predicted_latency_ratio(model, study.Arm("synflow"), 0.5, rates) is None


def test_app_precrop_latency_with_a_latency_model_file(tmp_path):
    rates = tf_precrop.LatencyModel(0.005, 0.005, 0.9, 0.0, name="file")
    (tmp_path / "lm.json").write_text(rates.to_json())
    proc = _app("--model=resnet20", "--flops=0.6", "--methods=precrop_latency", "--threads=1", "--round_to=8",
                "--num_runs=4", "--warmup_runs=1", "--rounds=2", f"--out_dir={tmp_path / 'out'}",
                f"--latency_model={tmp_path / 'lm.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "benchmark_resnet20.json").read_text())
    assert [r["method"] for r in rows] == ["dense", "precrop_latency r8"]
    assert rows[0]["predicted_latency_ratio"] == 1.0 and rows[1]["predicted_latency_ratio"] <= 0.6 + 1e-9
    assert "predicted latency/dense" in (tmp_path / "out" / "benchmark_resnet20.md").read_text()
    proc = _app("--methods=precrop_latency", f"--out_dir={tmp_path}", "--latency_model=/nonexistent.json")
    assert proc.returncode == 1 and "Received: --latency_model=/nonexistent.json" in proc.stderr
