"""Android measurement: benchmark_model output parser, adb command construction, apps.android_benchmark."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tf_precrop.export import android
from tf_precrop.export import latency

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
REPO = pathlib.Path(__file__).parent.parent

FAKE_ADB = f"""#!{sys.executable}
# Stand-in for adb: records its argv, prints canned output.
import json, os, sys
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args == ["devices"]:
    sys.stdout.write(os.environ["FAKE_ADB_DEVICES"])
elif "shell" in args and args[-1].startswith("--num_runs="):
    sys.stdout.write(open(os.environ["FAKE_ADB_OUTPUT"]).read())
else:
    sys.stdout.write("1 file pushed.\\n" if "push" in args else "")
"""


def _fixture(name):
    return (FIXTURES / name).read_text()


def test_parses_native_binary_output():
    stats = android.parse_benchmark_output(_fixture("benchmark_model_native.txt"))
    assert stats == {
        "init_ms": 5.617,
        "first_run_ms": 119.34,
        "warmup_mean_ms": 107.466,
        "mean_ms": 102.879,
        "std_ms": 0.119,
        "min_ms": 102.639,
        "max_ms": 103.238,
        "p50_ms": None,  # this release prints no percentiles
        "p95_ms": None,
        "num_runs": 50,
        "size_bytes": 4276100,
    }


def test_parses_logcat_line_of_the_android_app():
    stats = android.parse_benchmark_output(_fixture("benchmark_model_logcat.txt"))
    assert stats["init_ms"] == 5.685 and stats["first_run_ms"] == 18.535
    assert stats["warmup_mean_ms"] == pytest.approx(14.4623)
    assert stats["mean_ms"] == pytest.approx(14.5752)
    assert stats["num_runs"] is None and stats["std_ms"] is None and stats["size_bytes"] is None


def test_parses_older_average_summary():
    stats = android.parse_benchmark_output(_fixture("benchmark_model_op_profiling.txt"))
    assert stats["init_ms"] == 38.467 and stats["warmup_mean_ms"] == 83.235
    assert stats["mean_ms"] == pytest.approx(79.7609)
    assert stats["first_run_ms"] is None
    # One count= line only (the profiler's): not mistaken for the timed runs.
    assert stats["num_runs"] is None


def test_percentiles_and_all_same_runs():
    # The native fixture with the percentile fields newer releases append, and a constant warm-up.
    text = _fixture("benchmark_model_native.txt")
    text = text.replace("INFO: count=5 first=119340 curr=102705 min=102705 max=119340 avg=107466 std=6256",
                        "INFO: count=1 curr=119340")
    text = text.replace("avg=102879 std=119", "avg=1.02879e+05 std=119 p5=102650 median=102870 p95=103100")
    stats = android.parse_benchmark_output(text)
    assert stats["p50_ms"] == 102.87 and stats["p95_ms"] == 103.1 and stats["num_runs"] == 50
    only_same = android.parse_benchmark_output(text.replace(
        "count=50 first=103238 curr=102789 min=102639 max=103238 avg=1.02879e+05 std=119 p5=102650 median=102870 "
        "p95=103100", "count=50 curr=102789(all same)"))
    assert only_same["min_ms"] == only_same["max_ms"] == 102.789 and only_same["std_ms"] == 0.0


def test_truncated_output_is_an_error():
    text = "\n".join(_fixture("benchmark_model_native.txt").splitlines()[:16])
    with pytest.raises(ValueError) as err:
        android.parse_benchmark_output(text)
    assert str(err.value) == (
        "benchmark_model output has no 'Inference timings in us' summary; the run failed or was cut short. "
        "Last lines:\n"
        "INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding "
        "150 seconds.\n"
        "INFO: count=5 first=119340 curr=102705 min=102705 max=119340 avg=107466 std=6256\n"
        "\n"
        "INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding "
        "150 seconds.\n"
        "INFO: count=50 first=103238 curr=102789 min=102639 max=103238 avg=102879 std=119"
    )


def test_parsed_output_renders_in_the_shared_table():
    stats = android.parse_benchmark_output(_fixture("benchmark_model_native.txt"))
    row = latency.format_table([dict(stats, name="mobilenet_quant_v1_224.tflite", num_threads=4)]).splitlines()[2]
    assert row == "| mobilenet_quant_v1_224.tflite | 4 | 4175.9 | 5.62 | 119.340 | 102.879 | - | - | 0.119 | 102.639 | 50 |"  # noqa: E501


def test_device_commands():
    assert android.device_commands("out/small.tflite", "bin/benchmark_model", "R58M", num_threads=4,
                                   warmup_runs=5, num_runs=50, adb="/sdk/adb") == [
        ["/sdk/adb", "-s", "R58M", "push", "bin/benchmark_model", "/data/local/tmp/benchmark_model"],
        ["/sdk/adb", "-s", "R58M", "shell", "chmod", "+x", "/data/local/tmp/benchmark_model"],
        ["/sdk/adb", "-s", "R58M", "push", "out/small.tflite", "/data/local/tmp/small.tflite"],
        ["/sdk/adb", "-s", "R58M", "shell", "/data/local/tmp/benchmark_model",
         "--graph=/data/local/tmp/small.tflite", "--num_threads=4", "--warmup_runs=5", "--num_runs=50"],
    ]


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A fake `adb` first on PATH; returns a function reading the argv it was called with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB)
    adb.chmod(0o755)
    log = tmp_path / "adb_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "List of devices attached\nR58M12ABCDE\tdevice\n\n")
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(FIXTURES / "benchmark_model_native.txt"))
    (tmp_path / "small.tflite").write_bytes(b"\0" * 1234)
    (tmp_path / "benchmark_model").write_bytes(b"\x7fELF")

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    calls.adb = str(adb)
    return calls


def test_run_on_device_pushes_runs_and_parses(fake_adb, tmp_path):
    result = android.run_on_device(tmp_path / "small.tflite", tmp_path / "benchmark_model", num_threads=4,
                                   warmup_runs=5, num_runs=50)
    assert fake_adb() == [
        ["devices"],
        ["-s", "R58M12ABCDE", "push", str(tmp_path / "benchmark_model"), "/data/local/tmp/benchmark_model"],
        ["-s", "R58M12ABCDE", "shell", "chmod", "+x", "/data/local/tmp/benchmark_model"],
        ["-s", "R58M12ABCDE", "push", str(tmp_path / "small.tflite"), "/data/local/tmp/small.tflite"],
        ["-s", "R58M12ABCDE", "shell", "/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/small.tflite",
         "--num_threads=4", "--warmup_runs=5", "--num_runs=50"],
    ]
    assert result["serial"] == "R58M12ABCDE" and result["name"] == "small.tflite"
    assert result["mean_ms"] == 102.879 and result["num_threads"] == 4
    assert result["size_bytes"] == 1234  # the local file, exact
    assert "Inference timings in us" in result["log"]


def test_missing_adb(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(android.AdbError) as err:
        android.find_adb()
    assert str(err.value) == (
        "adb not found: 'adb' is not an executable on PATH. Install Android SDK Platform-Tools "
        "(https://developer.android.com/tools/releases/platform-tools) and add it to PATH, "
        "or pass --adb=/path/to/adb."
    )


def test_no_device(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "List of devices attached\nemulator-5554\tunauthorized\n\n")
    with pytest.raises(android.AdbError) as err:
        android.select_device(fake_adb.adb)
    assert str(err.value) == (
        "No Android device connected: `adb devices` lists none. Connect a phone with USB debugging "
        "enabled and accept the authorization prompt on it."
    )


def test_device_choice(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "List of devices attached\nAAA\tdevice\nBBB\tdevice\n\n")
    with pytest.raises(android.AdbError) as err:
        android.select_device(fake_adb.adb)
    assert str(err.value) == "Several devices are connected (AAA, BBB); choose one with --serial."
    with pytest.raises(android.AdbError) as err:
        android.select_device(fake_adb.adb, "CCC")
    assert str(err.value) == "Device 'CCC' is not connected. Connected: AAA, BBB."
    assert android.select_device(fake_adb.adb, "BBB") == "BBB"


def test_failing_adb_command_is_reported(fake_adb, tmp_path):
    broken = tmp_path / "bin" / "adb"
    broken.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('error: closed\\n')\nsys.exit(1)\n")
    with pytest.raises(android.AdbError) as err:
        android.connected_devices(str(broken))
    assert str(err.value) == f"`{broken} devices` failed with exit code 1:\nerror: closed"


def test_missing_local_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        android.run_on_device(tmp_path / "none.tflite", tmp_path / "benchmark_model")
    assert str(err.value) == f"`tflite` does not exist. Received: tflite={str(tmp_path / 'none.tflite')!r}"


def _app(*args, env=None):
    return subprocess.run([sys.executable, "-m", "apps.android_benchmark", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False, timeout=300)


def test_app_prints_and_writes_the_table(fake_adb, tmp_path):
    out = tmp_path / "phone.md"
    proc = _app(f"--tflite={tmp_path / 'small.tflite'}", f"--benchmark_binary={tmp_path / 'benchmark_model'}",
                "--serial=R58M12ABCDE", "--num_threads=2", f"--out={out}", env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "Device R58M12ABCDE:"
    assert "| small.tflite | 2 | 1.2 | 5.62 | 119.340 | 102.879 | - | - | 0.119 | 102.639 | 50 |" in proc.stdout
    assert fake_adb()[-1][-3:] == ["--num_threads=2", "--warmup_runs=10", "--num_runs=100"]
    text = out.read_text()
    assert text.startswith("# benchmark_model on device R58M12ABCDE\n") and "Inference timings in us" in text


def test_app_without_adb_fails_clearly(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"\0")
    (tmp_path / "b").write_bytes(b"\0")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    proc = _app(f"--tflite={tmp_path / 'm.tflite'}", f"--benchmark_binary={tmp_path / 'b'}",
                "--adb=adb-not-installed", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "android_benchmark: adb not found: 'adb-not-installed' is not an executable on PATH. Install Android "
        "SDK Platform-Tools (https://developer.android.com/tools/releases/platform-tools) and add it to PATH, "
        "or pass --adb=/path/to/adb."
    )
