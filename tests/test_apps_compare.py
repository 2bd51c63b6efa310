"""End-to-end tests of `apps.compare`: a tiny grid on mock data, its outputs, and resuming.

`apps.compare` defines its own flags (--flops is a list there) and never shares a
process with `apps.train`, so it runs here as it does for users: `python -m
apps.compare`, whose children are `python -m apps.train`. A `sitecustomize`
module on PYTHONPATH puts every one of these processes under
`tfds.testing.mock_data` and records each child start, so the test can see
exactly which children ran.
"""

import csv
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = ["--models=resnet20", "--width=4", "--methods=dense,precrop", "--flops=0.5", "--seeds=2",
        "--epochs=1", "--batch_size=16", "--train_take=32", "--test_take=16", "--jobs=2",
        "--train_flags=--validation_freq=0"]

SITECUSTOMIZE = textwrap.dedent("""
    import json, os, sys
    if "apps.train" in sys.orig_argv:
        with open(os.environ["CHILD_LOG"], "a") as log:
            log.write(json.dumps({"args": sys.orig_argv[3:],
                                  "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS")}) + "\\n")
    import tensorflow_datasets as tfds
    _MOCK = tfds.testing.mock_data(num_examples=32)  # a module global: never garbage-collected,
    _MOCK.__enter__()                                 # so the patches stay for the whole process
""")


@pytest.fixture
def mocked_env(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), ROOT]),
               CHILD_LOG=str(tmp_path / "children.jsonl"), TF_USE_LEGACY_KERAS="1")
    return env


def _compare(env, *args):
    return subprocess.run([sys.executable, "-m", "apps.compare", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _children(env):
    import json  # pylint: disable=g-import-not-at-top
    if not os.path.exists(env["CHILD_LOG"]):
        return []
    with open(env["CHILD_LOG"]) as f:
        return [json.loads(line) for line in f]


def test_grid_runs_writes_summaries_and_resumes(tmp_path, mocked_env):
    out_dir = tmp_path / "out"
    first = _compare(mocked_env, *GRID, f"--out_dir={out_dir}")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    children = _children(mocked_env)
    # Dense once per seed, precrop once per (flops, seed); children never see TF_USE_LEGACY_KERAS.
    assert sorted(c["args"][1] for c in children) == ["--method=dense"] * 2 + ["--method=precrop"] * 2
    assert [c["legacy_keras"] for c in children] == [None] * 4
    assert "compare: started 4, skipped 0, failed 0" in first.stdout

    with open(out_dir / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == [
        "resnet20_dense_s0", "resnet20_dense_s1", "resnet20_precrop_f0.5_s0",
        "resnet20_precrop_f0.5_s1"]
    with open(out_dir / "summary.csv") as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    assert summary["dense"]["n"] == summary["precrop"]["n"] == "2"
    assert float(summary["dense"]["step_time_rel_dense"]) == 1.0
    precrop = [float(r["test_accuracy"]) for r in rows if r["method"] == "precrop"]
    assert float(summary["precrop"]["test_accuracy_mean"]) == pytest.approx(sum(precrop) / 2)
    assert 0.45 <= float(summary["precrop"]["macs_ratio_mean"]) <= 0.5
    markdown = (out_dir / "summary.md").read_text()
    assert "| resnet20 | dense | - | 1.000 | 1.000 |" in markdown
    assert "| resnet20 | precrop | 0.5 |" in markdown
    for png in ("accuracy_vs_flops.png", "step_time_vs_flops.png"):
        assert 5_000 < os.path.getsize(out_dir / png) < 300_000

    second = _compare(mocked_env, *GRID, f"--out_dir={out_dir}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(_children(mocked_env)) == 4  # no child was started
    assert "compare: 4 runs, 4 finished before (skipped), 0 to run" in second.stdout
    assert "compare: started 0, skipped 4, failed 0" in second.stdout


@pytest.mark.parametrize("argv, message", [
    (["--methods=dense,bogus"],
     "FATAL Flags parsing error: flag --methods=['dense', 'bogus']: --methods must be a "
     "comma-separated list of: dense, precrop, preconfig, uniform_width, synflow, snip, grasp, "
     "magnitude, random, erk, optimal, synflow_random"),
    (["--flops=0.5,1.5"],
     "FATAL Flags parsing error: flag --flops=['0.5', '1.5']: --flops must be a comma-separated "
     "list of ratios in (0, 1], e.g. 0.5,0.25"),
])
def test_bad_grid_flags_fail_before_any_run(tmp_path, argv, message):
    done = subprocess.run([sys.executable, "-m", "apps.compare", *argv,
                           f"--out_dir={tmp_path / 'out'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert message in done.stderr.splitlines()
    assert not (tmp_path / "out").exists()
