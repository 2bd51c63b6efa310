"""On-phone latency with Google's ``benchmark_model`` binary, driven over ``adb``.

`run_on_device` pushes a .tflite file and the ``benchmark_model`` binary to
``/data/local/tmp`` on an Android device, runs it and parses its log with
`parse_benchmark_output` into the same keys as
``tf_precrop.export.latency.benchmark``, so both print with
``tf_precrop.export.latency.format_table``. See docs/android.md.
"""

import os
import re
import shutil
import subprocess

DEVICE_DIR = "/data/local/tmp"

_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
# "count=50 first=103238 curr=102789 min=102639 max=103238 avg=102879 std=119"
# (newer builds append "p5=... median=... p95=..."; "count=1 curr=..." when all runs are equal).
# The op profiler's "Timings (microseconds): count=..." and "Memory (bytes): count=..." are not run stats.
_STAT = re.compile(
    r"(?<!Timings \(microseconds\): )(?<!Memory \(bytes\): )\bcount=(?P<count>\d+)"
    r"(?P<rest>(?: \w+=" + _NUMBER + r")*)"
)
_FIELD = re.compile(r"(\w+)=(" + _NUMBER + r")")
# Current summary line (TFLite and LiteRT benchmark_model, native and Android app).
_SUMMARY = re.compile(
    r"Inference timings in us: Init: (?P<init>" + _NUMBER + r"), First inference: (?P<first>" + _NUMBER
    + r"), Warmup \(avg\): (?P<warmup>" + _NUMBER + r"), Inference \(avg\): (?P<mean>" + _NUMBER + r")"
)
# Summary line of older releases.
_OLD_SUMMARY = re.compile(
    r"Average inference timings in us: Warmup: (?P<warmup>" + _NUMBER + r"), Init: (?P<init>" + _NUMBER
    + r"), Inference: (?P<mean>" + _NUMBER + r")"
)
_FILE_SIZE = re.compile(r"The input model file size \(MB\): (?P<mb>" + _NUMBER + r")")


class AdbError(RuntimeError):
    """adb is missing, no usable device is connected, or an adb command failed."""


def _ms(us):
    return None if us is None else float(us) / 1e3


def parse_benchmark_output(text):
    """Parses the log of TFLite's ``benchmark_model`` into latency statistics.

    Understands the native binary's stdout (with or without ``INFO:``
    prefixes), ``adb logcat`` lines of the Android benchmark app, and the
    older ``Average inference timings in us`` summary. Per-run statistics
    (std, min, max, p50, p95, number of runs) come from the last
    ``count=...`` line, which the binary prints for the timed runs after the
    one for the warm-up runs; when the log has fewer than two such lines they
    are ``None``.

    Args:
        text: The output of ``benchmark_model``.

    Returns:
        A dict with, in milliseconds, ``init_ms``, ``first_run_ms``,
        ``warmup_mean_ms``, ``mean_ms``, ``std_ms``, ``min_ms``, ``max_ms``,
        ``p50_ms``, ``p95_ms``; ``num_runs``; and ``size_bytes`` (from the
        logged file size in MB = 10^6 bytes, so exact to 6 significant
        digits). Values the log does not contain are ``None``.

    Raises:
        ValueError: If the text has no ``Inference timings in us`` summary
            (the run failed or was cut short); the message quotes the end of
            the log.

    Example:
        >>> stats = parse_benchmark_output(open("log.txt").read())
        >>> stats["mean_ms"]
        102.879
    """
    summary = _SUMMARY.search(text)
    old = None if summary else _OLD_SUMMARY.search(text)
    if summary is None and old is None:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ValueError(
            "benchmark_model output has no 'Inference timings in us' summary; the run failed or was "
            f"cut short. Last lines:\n{tail}"
        )
    found = summary or old
    result = {
        "init_ms": _ms(found["init"]),
        "first_run_ms": _ms(summary["first"]) if summary else None,
        "warmup_mean_ms": _ms(found["warmup"]),
        "mean_ms": _ms(found["mean"]),
        "std_ms": None,
        "min_ms": None,
        "max_ms": None,
        "p50_ms": None,
        "p95_ms": None,
        "num_runs": None,
        "size_bytes": None,
    }
    stats = list(_STAT.finditer(text[: found.start()]))
    if len(stats) >= 2:
        last = stats[-1]
        fields = dict(_FIELD.findall(last["rest"]))
        result["num_runs"] = int(last["count"])
        if "min" in fields:
            result.update(std_ms=_ms(fields["std"]), min_ms=_ms(fields["min"]), max_ms=_ms(fields["max"]))
        else:  # "count=N curr=X(all same)"
            result.update(std_ms=0.0, min_ms=_ms(fields["curr"]), max_ms=_ms(fields["curr"]))
        result["p50_ms"] = _ms(fields.get("median"))
        result["p95_ms"] = _ms(fields.get("p95"))
    size = _FILE_SIZE.search(text)
    if size:
        result["size_bytes"] = int(round(float(size["mb"]) * 1e6))
    return result


def find_adb(adb="adb"):
    """The full path of the adb executable.

    Args:
        adb: A name looked up on ``PATH`` or a path to the executable.

    Returns:
        The absolute path of adb.

    Raises:
        AdbError: If adb cannot be found.

    Example:
        >>> find_adb()
        '/opt/android-sdk/platform-tools/adb'
    """
    path = shutil.which(adb)
    if path is None:
        raise AdbError(
            f"adb not found: {adb!r} is not an executable on PATH. Install Android SDK Platform-Tools "
            "(https://developer.android.com/tools/releases/platform-tools) and add it to PATH, "
            "or pass --adb=/path/to/adb."
        )
    return path


def _run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AdbError(
            f"`{' '.join(argv)}` failed with exit code {proc.returncode}:\n{(proc.stdout + proc.stderr).strip()}"
        )
    return proc.stdout + proc.stderr


def connected_devices(adb):
    """Serial numbers of the devices ``adb devices`` lists as ready.

    Args:
        adb: Path of the adb executable.

    Returns:
        A list of serials in state ``device`` (unauthorized or offline
        devices are left out).

    Raises:
        AdbError: If ``adb devices`` fails.

    Example:
        >>> connected_devices(find_adb())
        ['R58M12ABCDE']
    """
    serials = []
    for line in _run([adb, "devices"]).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "device":
            serials.append(parts[0])
    return serials


def select_device(adb, serial=None):
    """The serial to run on: ``serial`` if it is connected, else the only device.

    Args:
        adb: Path of the adb executable.
        serial: A device serial, or ``None`` to use the single connected device.

    Returns:
        The serial number.

    Raises:
        AdbError: If no device is connected, ``serial`` is not connected, or
            several are connected and ``serial`` is ``None``.

    Example:
        >>> select_device(find_adb())
        'R58M12ABCDE'
    """
    devices = connected_devices(adb)
    if not devices:
        raise AdbError(
            "No Android device connected: `adb devices` lists none. Connect a phone with USB debugging "
            "enabled and accept the authorization prompt on it."
        )
    if serial is None:
        if len(devices) > 1:
            raise AdbError(
                f"Several devices are connected ({', '.join(devices)}); choose one with --serial."
            )
        return devices[0]
    if serial not in devices:
        raise AdbError(f"Device {serial!r} is not connected. Connected: {', '.join(devices)}.")
    return serial


def device_commands(tflite, benchmark_binary, serial, num_threads=1, warmup_runs=10, num_runs=100,
                    adb="adb", device_dir=DEVICE_DIR):
    """The adb command lines that push the files and run the benchmark.

    Args:
        tflite: Local .tflite file.
        benchmark_binary: Local ``benchmark_model`` binary built for the
            device's ABI (e.g. android_aarch64).
        serial: Device serial (``adb -s``).
        num_threads: ``--num_threads`` of the benchmark.
        warmup_runs: ``--warmup_runs``.
        num_runs: ``--num_runs``.
        adb: adb executable.
        device_dir: Writable directory on the device.

    Returns:
        A list of argv lists: push the binary, make it executable, push the
        model, run the benchmark.

    Example:
        >>> device_commands("small.tflite", "benchmark_model", "emulator-5554")[-1][-4:]
        ['--graph=/data/local/tmp/small.tflite', '--num_threads=1', '--warmup_runs=10', '--num_runs=100']
    """
    remote_binary = f"{device_dir}/benchmark_model"
    remote_model = f"{device_dir}/{os.path.basename(os.fspath(tflite))}"
    base = [adb, "-s", serial]
    return [
        base + ["push", os.fspath(benchmark_binary), remote_binary],
        base + ["shell", "chmod", "+x", remote_binary],
        base + ["push", os.fspath(tflite), remote_model],
        base + [
            "shell",
            remote_binary,
            f"--graph={remote_model}",
            f"--num_threads={num_threads}",
            f"--warmup_runs={warmup_runs}",
            f"--num_runs={num_runs}",
        ],
    ]


def run_on_device(tflite, benchmark_binary, serial=None, num_threads=1, warmup_runs=10, num_runs=100,
                  adb="adb"):
    """Measures a .tflite file on an Android device with ``benchmark_model``.

    Args:
        tflite: Local .tflite file.
        benchmark_binary: Local ``benchmark_model`` binary for the device's ABI.
        serial: Device serial; ``None`` uses the only connected device.
        num_threads: Benchmark threads.
        warmup_runs: Warm-up runs (the binary may add more to reach its
            minimum warm-up time).
        num_runs: Timed runs (the binary may add more to reach its minimum
            run time).
        adb: adb executable name or path.

    Returns:
        The dict of `parse_benchmark_output` plus ``name`` (the .tflite file
        name), ``path``, ``serial``, ``num_threads``, ``warmup_runs``,
        ``size_bytes`` (exact, from the local file) and ``log`` (the raw output).

    Raises:
        FileNotFoundError: If ``tflite`` or ``benchmark_binary`` does not exist.
        AdbError: If adb or a device is missing or an adb command fails.
        ValueError: If the benchmark output has no summary.

    Example:
        >>> stats = run_on_device("small.tflite", "android_aarch64_benchmark_model", num_threads=4)
        >>> stats["mean_ms"]
        3.2
    """
    for name, path in (("tflite", tflite), ("benchmark_binary", benchmark_binary)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`{name}` does not exist. Received: {name}={os.fspath(path)!r}")
    adb = find_adb(adb)
    serial = select_device(adb, serial)
    *setup, run = device_commands(tflite, benchmark_binary, serial, num_threads, warmup_runs, num_runs, adb)
    for argv in setup:
        _run(argv)
    log = _run(run)
    result = parse_benchmark_output(log)
    result.update(
        name=os.path.basename(os.fspath(tflite)),
        path=os.fspath(tflite),
        serial=serial,
        num_threads=num_threads,
        warmup_runs=warmup_runs,
        size_bytes=os.path.getsize(tflite),
        log=log,
    )
    return result
