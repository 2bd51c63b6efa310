"""Knowledge distillation from the dense model while a pruned model fine-tunes (Hinton et al. 2015)."""

from __future__ import annotations

import keras
from keras import ops


class Distiller(keras.Model):
    """Trains ``student`` on ``(1 - alpha) * task loss + alpha * T² * KL(teacher_T || student_T)``.

    ``X_T`` is the softmax of the logits divided by the temperature T. A standard ``keras.Model``: compile it
    with the task loss and metrics and call ``fit`` (callbacks, TensorBoard and distribution strategies work
    as usual); its predictions are the student's. Only ``keras.ops`` are used, so any backend works.

    Args:
        student: the model to train (e.g. the output of ``tf_precrop.prune``).
        teacher: the trained dense model; frozen (its weights never change).
        alpha: weight of the distillation term, in [0, 1].
        temperature: softening temperature T > 0.
        from_logits: whether both models output logits; False (default) for softmax outputs, whose
            logarithms then serve as logits (equal up to a constant, which softmax ignores).

    Raises:
        ValueError: if ``alpha`` is outside [0, 1] or ``temperature`` is not positive.

    Example:
        >>> small = tf_precrop.prune(trained, flops=0.5)
        >>> distiller = tf_precrop.Distiller(small, trained, alpha=0.5, temperature=4.0)
        >>> distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        >>> distiller.fit(train_ds, epochs=3)
        >>> small.save("small.keras")  # the student holds the trained weights
    """

    def __init__(self, student, teacher, *, alpha: float = 0.5, temperature: float = 4.0,
                 from_logits: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive. Received: temperature={temperature}")
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.from_logits = from_logits

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _logits(self, outputs):
        return outputs if self.from_logits else ops.log(ops.maximum(outputs, 1e-12))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        task = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if self.alpha == 0.0:
            return task
        t = self.temperature
        teacher = ops.softmax(self._logits(self.teacher(x, training=False)) / t, axis=-1)
        student = ops.log_softmax(self._logits(y_pred) / t, axis=-1)
        teacher = ops.stop_gradient(teacher)
        kl = ops.sum(teacher * (ops.log(ops.maximum(teacher, 1e-12)) - student), axis=-1)
        return (1.0 - self.alpha) * task + self.alpha * t * t * ops.mean(kl)
