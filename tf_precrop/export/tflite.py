"""TFLite (LiteRT) export with a parity check against the source model.

`to_tflite` converts a Keras 3 model (dense or the output of
``tf_precrop.crop``) or a stripped tf_keras model (the TF-MOT sparse arm,
``tf_precrop.sparsity.strip``) with ``tf.lite.TFLiteConverter.from_keras_model``,
writes the flatbuffer, then runs it in ``ai_edge_litert``'s interpreter on
inputs the model is also run on and raises `ExportParityError` when the outputs
disagree.

Parity tolerances (the largest absolute output difference allowed):

* float export: ``1e-4`` absolute (`FLOAT_TOLERANCE`);
* quantized exports: a fraction of the output scale, the largest absolute
  value of the reference outputs on the check inputs (`QUANTIZED_TOLERANCE`).
  The fractions are about 2x the worst error measured on dense and cropped
  ResNet-20s with random weights (docs/export.md has the numbers and how they
  were measured).
"""

import os

import keras
import numpy as np

from tf_precrop import _extras

tf = _extras.require("tensorflow", "tf_precrop.export")
litert = _extras.require("ai_edge_litert.interpreter", "tf_precrop.export")

QUANTIZATIONS = (None, "dynamic", "float16", "int8")

FLOAT_TOLERANCE = 1e-4

# Allowed max |tflite - model| / max |model| per quantization mode.
QUANTIZED_TOLERANCE = {"dynamic": 0.15, "float16": 0.01, "int8": 0.3}


class ExportParityError(ValueError):
    """The exported .tflite file does not reproduce the model's outputs.

    Attributes:
        path: Where the .tflite file was written (it is kept for inspection).
        max_abs_diff: The largest absolute output difference measured.
        tolerance: The absolute tolerance it was compared with.
    """

    def __init__(self, message, *, path, max_abs_diff, tolerance):
        super().__init__(message)
        self.path = path
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance


def model_family(model):
    """Which Keras implements ``model``: ``"keras"`` (Keras 3) or ``"tf_keras"``.

    Detected from the module of the model's class, so tf_keras is never
    imported here.

    Args:
        model: A Keras 3 or tf_keras model.

    Returns:
        ``"keras"`` or ``"tf_keras"``.

    Raises:
        TypeError: If ``model`` is neither.

    Example:
        >>> model_family(tf_precrop.models.resnet20())
        'keras'
    """
    module = type(model).__module__
    root = module.split(".", 1)[0]
    if root in ("keras", "tf_keras") and hasattr(model, "inputs") and hasattr(model, "outputs"):
        return root
    raise TypeError(
        "`model` must be a Keras 3 model or a tf_keras model (e.g. from tf_precrop.sparsity.strip). "
        f"Received: model of type {module}.{type(model).__name__}"
    )


def _check_quantization(quantization, representative_data):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            'quantization="int8" needs `representative_data`: a few hundred typical inputs '
            "(an array shaped like the model input with a batch axis, or an iterable of such "
            "batches or of (x, y) batches) to calibrate the activation ranges."
        )


def _input_shape(model):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "to_tflite supports models with one input and one output. "
            f"Received: a model with {len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"The model input needs a fully static shape (besides the batch). Received: input shape {shape}"
        )
    return shape


def _samples(data, input_shape, limit):
    """Single samples (batch of 1, float32) drawn from ``data``.

    Args:
        data: An array of shape ``(n, *input_shape)``, or an iterable of such
            arrays or of ``(x, y)`` tuples (a ``tf.data.Dataset`` works).
        input_shape: The model input shape without the batch axis.
        limit: Maximum number of samples to return.

    Returns:
        A list of float32 arrays of shape ``(1, *input_shape)``.

    Raises:
        ValueError: If a batch does not match ``input_shape`` or ``data`` is empty.

    Example:
        >>> len(_samples(np.zeros((5, 8, 8, 3)), (8, 8, 3), limit=3))
        3
    """
    batches = [data] if isinstance(data, np.ndarray) else data
    out = []
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = np.asarray(batch, dtype="float32")
        if batch.shape[1:] != tuple(input_shape):
            raise ValueError(
                f"`representative_data` batches must have shape (n, {', '.join(map(str, input_shape))}). "
                f"Received: a batch of shape {batch.shape}"
            )
        for x in batch:
            out.append(x[None])
            if len(out) == limit:
                return out
    if not out:
        raise ValueError("`representative_data` is empty.")
    return out


def _converter(model, quantization, calibration, sparse):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if quantization is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.representative_dataset = lambda: ([x] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def _convert(converter):
    # The Keras 3 path exports a SavedModel first and prints its whole
    # signature to stdout; keep that in the log instead.
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        return converter.convert()
    finally:
        if interactive:
            keras.config.enable_interactive_logging()


def _reference_outputs(model, inputs):
    return [np.asarray(model(x, training=False), dtype="float32") for x in inputs]


def run_tflite(path, inputs, num_threads=1):
    """Outputs of a single-input, single-output .tflite model with a float interface.

    Args:
        path: The .tflite file (every `to_tflite` export has float32 input
            and output, also when quantized).
        inputs: Float32 arrays shaped like the model input (batch of 1).
        num_threads: Interpreter threads.

    Returns:
        A list of float32 arrays, one output per input.

    Example:
        >>> y = run_tflite("small.tflite", [np.zeros((1, 32, 32, 3), "float32")])
    """
    interp = litert.Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    results = []
    for x in inputs:
        interp.set_tensor(inp, np.asarray(x, dtype="float32"))
        interp.invoke()
        results.append(np.array(interp.get_tensor(out), dtype="float32"))
    return results


def to_tflite(model, path, quantization=None, representative_data=None, sparse=False, check=True,
              num_check_inputs=8, tolerance=None, seed=0):
    """Converts a model to a .tflite file and verifies it against the model.

    Keras 3 models are converted with
    ``tf.lite.TFLiteConverter.from_keras_model`` directly (never through a
    ``tf.function``, which would leave variable ops in the graph); tf_keras
    models, such as the TF-MOT arm after ``tf_precrop.sparsity.strip``, take
    the same path.

    Args:
        model: A Keras 3 model, or a stripped tf_keras model. One input with a
            static shape, one output.
        path: Where to write the .tflite file (parent directories are created).
        quantization: ``None`` (float32), ``"dynamic"`` (int8 weights, float
            activations), ``"float16"`` (float16 weights) or ``"int8"`` (full
            integer kernels with a float interface; needs
            ``representative_data``).
        representative_data: Typical inputs: an array ``(n, *input_shape)`` or
            an iterable of such batches or of ``(x, y)`` batches. Used to
            calibrate int8 (up to 200 samples) and, when given, as the check
            inputs of any export.
        sparse: Add ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``: weights that
            are mostly zeros are stored in a sparse format (smaller file;
            runtimes may densify them when loading).
        check: Run the .tflite in ``ai_edge_litert`` and compare with the model.
        num_check_inputs: Number of inputs for the check: samples of
            ``representative_data`` if given, otherwise uniform random in [0, 1).
        tolerance: Override of the absolute tolerance; by default
            `FLOAT_TOLERANCE` for float exports and
            ``QUANTIZED_TOLERANCE[quantization]`` x output scale otherwise.
        seed: Seed of the random check inputs.

    Returns:
        A dict with ``path`` (str), ``size_bytes``, ``quantization``,
        ``sparse``, ``max_abs_diff`` (``None`` without check),
        ``output_scale`` (max |model output| on the check inputs, ``None``
        without check) and ``tolerance`` (absolute, ``None`` without check).

    Raises:
        ValueError: On a bad ``quantization``, int8 without
            ``representative_data``, a model with several inputs/outputs or a
            dynamic input shape, or representative data of the wrong shape.
        TypeError: If ``model`` is not a Keras 3 or tf_keras model.
        ExportParityError: If the .tflite outputs differ from the model's by
            more than the tolerance (the file is kept at ``path``).

    Example:
        >>> small = tf_precrop.crop(tf_precrop.models.resnet20(), flops=0.5, round_to=8)
        >>> info = to_tflite(small, "small.tflite")
        >>> info["max_abs_diff"] <= 1e-4
        True
    """
    model_family(model)
    _check_quantization(quantization, representative_data)
    input_shape = _input_shape(model)
    calibration = None
    if representative_data is not None:
        calibration = _samples(representative_data, input_shape, limit=200)

    tflite_bytes = _convert(_converter(model, quantization, calibration, sparse))
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(tflite_bytes)
    info = {
        "path": path,
        "size_bytes": len(tflite_bytes),
        "quantization": quantization,
        "sparse": bool(sparse),
        "max_abs_diff": None,
        "output_scale": None,
        "tolerance": None,
    }
    if not check:
        return info

    if calibration is not None:
        inputs = calibration[:num_check_inputs]
    else:
        rng = np.random.default_rng(seed)
        inputs = [rng.random((1, *input_shape), dtype="float32") for _ in range(num_check_inputs)]
    expected = _reference_outputs(model, inputs)
    actual = run_tflite(path, inputs)
    diff = max(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected))
    scale = max(float(np.max(np.abs(e))) for e in expected)
    if tolerance is None:
        tolerance = FLOAT_TOLERANCE if quantization is None else QUANTIZED_TOLERANCE[quantization] * scale
    info.update(max_abs_diff=diff, output_scale=scale, tolerance=float(tolerance))
    if not diff <= tolerance:
        raise ExportParityError(
            f"TFLite output differs from the model: max abs diff {diff:.3g} > tolerance {tolerance:.3g} "
            f"(quantization={quantization!r}, {len(inputs)} check inputs). The file is kept at {path}.",
            path=path,
            max_abs_diff=diff,
            tolerance=float(tolerance),
        )
    return info
