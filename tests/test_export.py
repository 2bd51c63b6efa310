"""TFLite export (parity-checked) and LiteRT latency: tf_precrop.export."""

import os

import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter as litert

import tf_precrop
from tf_precrop import export
from tf_precrop.export import latency as latency_lib
from tf_precrop.export import tflite as tflite_lib


def _randomize_batchnorm(model, seed=0):
    """Trained-looking BN statistics: at init they are the identity and MobileNetV2's output is constant."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape),
                rng.normal(0.0, 0.2, beta.shape),
                rng.normal(0.0, 0.2, mean.shape),
                rng.uniform(0.5, 1.5, var.shape),
            ])
    return model


@pytest.fixture(scope="module")
def cropped_resnet20():
    dense = tf_precrop.models.resnet20()
    return _randomize_batchnorm(tf_precrop.crop(dense, flops=0.5, round_to=8, seed=0))


@pytest.fixture(scope="module")
def tiny():
    """A small Keras 3 CNN (fast to convert) for the error paths."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


@pytest.fixture(scope="module")
def resnet20_tflite(cropped_resnet20, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "resnet20_half.tflite"
    return export.to_tflite(cropped_resnet20, path)


def test_cropped_resnet20_float_export_matches(cropped_resnet20, resnet20_tflite):
    info = resnet20_tflite
    assert set(info) == {"path", "size_bytes", "quantization", "sparse", "max_abs_diff", "output_scale", "tolerance"}
    assert info["quantization"] is None and info["sparse"] is False
    assert info["size_bytes"] == os.path.getsize(info["path"])
    assert info["tolerance"] == export.FLOAT_TOLERANCE == 1e-4
    assert 0.0 <= info["max_abs_diff"] <= 1e-4
    assert 0.0 < info["output_scale"] <= 1.0  # softmax output
    # The file holds the cropped model: its float32 weights, not the dense model's.
    weights_bytes = 4 * tf_precrop.count(cropped_resnet20).params
    assert weights_bytes < info["size_bytes"] < weights_bytes + 200_000


def test_cropped_mobilenet_v2_float_export_matches(tmp_path):
    dense = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10)
    small = _randomize_batchnorm(tf_precrop.crop(dense, flops=0.5, round_to=8, seed=0))
    info = export.to_tflite(small, tmp_path / "mobilenet_v2.tflite", num_check_inputs=2)
    assert info["max_abs_diff"] <= 1e-4
    assert info["output_scale"] > 0.1  # not the constant 1/10 a fresh MobileNetV2 outputs


def test_stripped_synflow_model_exports_sparse(tmp_path, monkeypatch):
    from tf_precrop import sparsity

    # Importing TF-MOT sets TF_USE_LEGACY_KERAS for the process; undo it after this test.
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
    model = tf_precrop.models.resnet20(width=8)
    masks = sparsity.synflow(model, flops=0.5, iterations=5)
    final = sparsity.strip(sparsity.to_tfmot(model, masks))
    assert tflite_lib.model_family(final) == "tf_keras"

    info = export.to_tflite(final, tmp_path / "synflow_sparse.tflite", sparse=True)
    assert info["sparse"] is True
    assert info["max_abs_diff"] <= 1e-4
    # Pruned kernels are stored sparse: the file is well below the float32 size of all weights.
    cost = sparsity.masked_cost(model, masks)
    assert cost["params_ratio"] < 0.6
    assert info["size_bytes"] < 0.75 * 4 * final.count_params()


def test_int8_export_with_representative_data(cropped_resnet20, tmp_path):
    data = np.random.default_rng(1).random((32, 32, 32, 3), dtype="float32")
    info = export.to_tflite(cropped_resnet20, tmp_path / "int8.tflite", quantization="int8",
                            representative_data=data)
    assert info["quantization"] == "int8"
    assert info["tolerance"] == pytest.approx(export.QUANTIZED_TOLERANCE["int8"] * info["output_scale"])
    assert 0.0 < info["max_abs_diff"] <= info["tolerance"]
    interp = litert.Interpreter(model_path=info["path"])
    kinds = {d["dtype"] for d in interp.get_tensor_details()}
    assert np.int8 in kinds
    assert interp.get_input_details()[0]["dtype"] == np.float32  # float interface


def test_int8_accepts_x_y_batches(tiny, tmp_path):
    rng = np.random.default_rng(2)
    batches = [(rng.random((8, 8, 8, 3), dtype="float32"), np.zeros(8)) for _ in range(2)]
    info = export.to_tflite(tiny, tmp_path / "int8.tflite", quantization="int8",
                            representative_data=batches, num_check_inputs=4)
    assert info["max_abs_diff"] <= info["tolerance"]


def test_int8_without_representative_data_is_an_error(tiny, tmp_path):
    with pytest.raises(ValueError) as err:
        export.to_tflite(tiny, tmp_path / "x.tflite", quantization="int8")
    assert str(err.value) == (
        'quantization="int8" needs `representative_data`: a few hundred typical inputs '
        "(an array shaped like the model input with a batch axis, or an iterable of such "
        "batches or of (x, y) batches) to calibrate the activation ranges."
    )
    assert not (tmp_path / "x.tflite").exists()


def test_unknown_quantization_is_an_error(tiny, tmp_path):
    with pytest.raises(ValueError) as err:
        export.to_tflite(tiny, tmp_path / "x.tflite", quantization="int4")
    assert str(err.value) == (
        "`quantization` must be one of (None, 'dynamic', 'float16', 'int8'). Received: quantization='int4'"
    )


def test_representative_data_of_wrong_shape_is_an_error(tiny, tmp_path):
    with pytest.raises(ValueError) as err:
        export.to_tflite(tiny, tmp_path / "x.tflite", quantization="int8",
                         representative_data=np.zeros((4, 28, 28, 1)))
    assert str(err.value) == (
        "`representative_data` batches must have shape (n, 8, 8, 3). Received: a batch of shape (4, 28, 28, 1)"
    )


def test_empty_representative_data_is_an_error(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"^`representative_data` is empty\.$"):
        export.to_tflite(tiny, tmp_path / "x.tflite", quantization="int8", representative_data=[])


def test_mismatch_raises_with_measured_diff(tiny, tmp_path, monkeypatch):
    real = tflite_lib._reference_outputs
    monkeypatch.setattr(tflite_lib, "_reference_outputs", lambda m, xs: [y + 1.0 for y in real(m, xs)])
    path = str(tmp_path / "off.tflite")
    with pytest.raises(export.ExportParityError) as err:
        export.to_tflite(tiny, path)
    assert str(err.value) == (
        "TFLite output differs from the model: max abs diff 1 > tolerance 0.0001 "
        f"(quantization=None, 8 check inputs). The file is kept at {path}."
    )
    assert isinstance(err.value, ValueError)
    assert err.value.max_abs_diff == pytest.approx(1.0, abs=1e-4)
    assert err.value.path == path and os.path.isfile(path)


def test_real_quantization_error_exceeds_a_strict_tolerance(tiny, tmp_path):
    with pytest.raises(export.ExportParityError, match=r"max abs diff .* > tolerance 0 \(quantization='float16'"):
        export.to_tflite(tiny, tmp_path / "f16.tflite", quantization="float16", tolerance=0.0)


def test_check_false_skips_parity(tiny, tmp_path):
    info = export.to_tflite(tiny, tmp_path / "sub" / "dyn.tflite", quantization="dynamic", check=False)
    assert info["max_abs_diff"] is None and info["tolerance"] is None
    assert os.path.isfile(tmp_path / "sub" / "dyn.tflite")


def test_non_model_is_a_type_error(tmp_path):
    with pytest.raises(TypeError) as err:
        export.to_tflite(object(), tmp_path / "x.tflite")
    assert str(err.value) == (
        "`model` must be a Keras 3 model or a tf_keras model (e.g. from tf_precrop.sparsity.strip). "
        "Received: model of type builtins.object"
    )


def test_two_input_model_is_rejected(tmp_path):
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError) as err:
        export.to_tflite(model, tmp_path / "x.tflite")
    assert str(err.value) == (
        "to_tflite supports models with one input and one output. Received: a model with 2 inputs and 1 outputs"
    )


def test_benchmark_stats_are_sane(resnet20_tflite):
    for threads in (1, 2):
        stats = export.benchmark(resnet20_tflite["path"], num_threads=threads, warmup_runs=2, num_runs=20)
        assert stats["num_threads"] == threads and stats["num_runs"] == 20 and stats["warmup_runs"] == 2
        assert stats["size_bytes"] == resnet20_tflite["size_bytes"]
        for key in ("init_ms", "first_run_ms", "mean_ms", "p50_ms", "p95_ms", "min_ms", "max_ms"):
            assert stats[key] > 0, key
        assert stats["std_ms"] >= 0
        assert stats["min_ms"] <= stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
        assert stats["min_ms"] <= stats["mean_ms"] <= stats["max_ms"]


def test_interleaved_benchmark_gives_every_file_all_runs(resnet20_tflite, tmp_path):
    other = tmp_path / "copy.tflite"
    other.write_bytes(open(resnet20_tflite["path"], "rb").read())
    results = export.benchmark_interleaved([resnet20_tflite["path"], other], warmup_runs=1, num_runs=10, rounds=4)
    assert [r["path"] for r in results] == [resnet20_tflite["path"], str(other)]
    assert [r["num_runs"] for r in results] == [10, 10]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_threads=0), "`num_threads` must be an integer >= 1. Received: num_threads=0"),
        (dict(warmup_runs=-1), "`warmup_runs` must be an integer >= 0. Received: warmup_runs=-1"),
        (dict(num_runs=2.5), "`num_runs` must be an integer >= 1. Received: num_runs=2.5"),
    ],
)
def test_benchmark_rejects_bad_counts(resnet20_tflite, kwargs, message):
    with pytest.raises(ValueError) as err:
        export.benchmark(resnet20_tflite["path"], **kwargs)
    assert str(err.value) == message


def test_more_rounds_than_runs_is_an_error(resnet20_tflite):
    with pytest.raises(ValueError) as err:
        export.benchmark_interleaved([resnet20_tflite["path"]], num_runs=3, rounds=5)
    assert str(err.value) == "`rounds` must be <= `num_runs`. Received: rounds=5, num_runs=3"


def test_benchmark_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        export.benchmark(tmp_path / "none.tflite")
    assert str(err.value) == f"No .tflite file at {str(tmp_path / 'none.tflite')!r}"


def test_summarize_percentiles():
    stats = export.summarize([4.0, 1.0, 3.0, 2.0, 100.0])
    assert stats == {
        "mean_ms": 22.0, "p50_ms": 3.0, "p95_ms": pytest.approx(80.8), "std_ms": pytest.approx(1522**0.5),
        "min_ms": 1.0, "max_ms": 100.0, "num_runs": 5,
    }
    with pytest.raises(ValueError, match=r"^`latencies_ms` is empty: no timed runs\.$"):
        export.summarize([])


def test_format_table_renders_missing_values_as_dash():
    table = export.format_table([
        {"path": "/x/small.tflite", "num_threads": 1, "size_bytes": 2048, "init_ms": 1.5, "first_run_ms": 2.0,
         "mean_ms": 1.0, "p50_ms": 0.9, "p95_ms": 1.2, "std_ms": 0.1, "min_ms": 0.8, "num_runs": 100},
        {"name": "phone", "num_threads": 4, "mean_ms": 14.5752},
    ])
    assert table.splitlines() == [
        "| model | threads | file KB | init ms | first run ms | mean ms | p50 ms | p95 ms | std ms | min ms | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| small.tflite | 1 | 2.0 | 1.50 | 2.000 | 1.000 | 0.900 | 1.200 | 0.100 | 0.800 | 100 |",
        "| phone | 4 | - | - | - | 14.575 | - | - | - | - | - |",
    ]
    assert latency_lib.TABLE_COLUMNS[0][0] == "name"
