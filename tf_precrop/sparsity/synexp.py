"""The SynFlow objective R(θ) and a Monte Carlo estimate of SynExp.

``SynExp = E_M[R(θ ⊙ M)]`` over random masks ``M`` (docs/method.md § SynFlow and SynExp). If the masks
do not depend on the weights and layer ``l`` keeps each weight with marginal
probability ``p_l``, every input-to-output path of a chain network survives
with probability ``prod_l p_l``, so ``SynExp = (prod_l p_l) R(θ)`` at weight,
kernel or filter granularity. At *channel* granularity a removed output
channel of layer ``l`` also removes the matching inputs of layer ``l+1``: with
output keep ratios ``c_l`` the effective density of layer ``l`` is
``c_(l-1) c_l`` but a path survives with probability ``prod_l c_l`` (one
factor per channel group, not per layer). Residual, concat and gating paths
add a second departure: each path only collects the factors of the layers it
crosses.
"""

import numpy as np

from tf_precrop.sparsity import masks as masks_lib
from tf_precrop.sparsity import scores as scores_lib

SYNEXP_GRANULARITIES = masks_lib.GRANULARITIES + ("channel",)


def synflow_objective(model, masks=None):
    """``R(θ ⊙ M) = 1ᵀ(∏|θ_l ⊙ M_l|)1`` on the linearized float64 copy.

    Args:
        model: A built Keras 3 model with a static input shape.
        masks: Optional ``{kernel key: 0/1 array}``; missing kernels are dense.

    Returns:
        ``R`` as a Python float.

    Raises:
        ValueError: If a mask key is unknown or its shape does not match.

    Example:
        >>> synflow_objective(model) > 0
        True
    """
    lin = scores_lib.LinearizedModel(model)
    arrays = masks_lib.mask_arrays(lin.kernels, masks or {})
    return lin.objective_and_grads(arrays)[0]


def _channel_masks(lin, densities, rng):
    """Output-channel masks: kernel output slices and the layer's bias."""
    kernel_masks, bias_masks = [], []
    for k, bias in zip(lin.kernels, lin.biases):
        c = float(densities.get(k.key, 1.0))
        axes = k.channel_axes
        unit_shape = tuple(k.shape[a] for a in axes)
        units = int(np.prod(unit_shape))
        unit = np.zeros(units)
        unit[rng.permutation(units)[: max(1, int(round(c * units)))]] = 1.0
        shape = [1] * len(k.shape)
        for a, n in zip(axes, unit_shape):
            shape[a] = n
        kernel_masks.append(np.broadcast_to(unit.reshape(shape), k.shape))
        bias_masks.append(None if bias is None else unit)
    return kernel_masks, bias_masks


def synexp(model, densities, *, granularity="weight", samples=64, seed=0):
    """Monte Carlo estimate of SynExp at fixed initialization.

    Args:
        model: A built Keras 3 model with a static input shape.
        densities: ``{kernel key: p}``. For ``"weight"``, ``"kernel"`` and
            ``"filter"`` the kernel density; for ``"channel"`` the keep ratio
            of the layer's *output channels* (kernel output slice and bias
            removed together, so the next layer loses those inputs; a
            following BatchNormalization's shift still passes).
            Missing kernels stay dense.
        granularity: One of ``"weight"``, ``"kernel"``, ``"filter"``,
            ``"channel"``.
        samples: Number of random masks.
        seed: Seed of the masks.

    Returns:
        A dict: ``mean`` (estimated SynExp), ``stderr`` (its standard error),
        ``dense`` (``R(θ)``), ``prod_density`` (product over kernels of their
        *effective* density, measured on the sampled masks), ``predicted``
        (``prod_density * dense``), ``ratio`` (``mean / predicted``) and
        ``samples``.

    Raises:
        ValueError: On an unknown granularity or ``samples < 2``.

    Example:
        >>> est = synexp(model, {"d1/kernel": 0.5}, samples=200)
        >>> abs(est["ratio"] - 1) < 3 * est["stderr"] / est["predicted"]
        True
    """
    if granularity not in SYNEXP_GRANULARITIES:
        raise ValueError(
            f"`granularity` must be one of {SYNEXP_GRANULARITIES}. "
            f"Received: granularity={granularity!r}"
        )
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"`samples` must be an int >= 2. Received: samples={samples!r}")
    lin = scores_lib.LinearizedModel(model)
    dense = lin.objective_and_grads([None] * len(lin.kernels))[0]
    rng = np.random.default_rng(seed)
    values, log_prod = [], []
    for _ in range(samples):
        if granularity == "channel":
            km, bm = _channel_masks(lin, densities, rng)
            eff = _effective_densities(lin, km)
        else:
            drawn = masks_lib.random_masks(
                model, densities, granularity=granularity, seed=int(rng.integers(2**31))
            )
            km, bm = [drawn[k.key] for k in lin.kernels], None
            eff = [m.mean() for m in km]
        values.append(lin.objective_and_grads(km, bm)[0])
        log_prod.append(np.sum(np.log(eff)))
    values = np.asarray(values)
    prod_density = float(np.exp(np.mean(log_prod)))
    predicted = prod_density * dense
    return {
        "mean": float(values.mean()),
        "stderr": float(values.std(ddof=1) / np.sqrt(samples)),
        "dense": dense,
        "prod_density": prod_density,
        "predicted": predicted,
        "ratio": float(values.mean() / predicted),
        "samples": samples,
    }


def _effective_densities(lin, kernel_masks):
    """Effective density of each kernel of a chain: own mask x live inputs.

    A weight of layer ``l`` is effective if its own output channel is kept and
    its input channel is a kept output channel of the previous kernel (when
    the widths match; otherwise the input is treated as fully alive).
    """
    eff, prev_out = [], None
    for k, m in zip(lin.kernels, kernel_masks):
        m = np.asarray(m)
        density = m.mean()
        if prev_out is not None and len(k.shape) >= 2 and k.shape[-2] == prev_out.size:
            in_alive = prev_out.reshape([1] * (len(k.shape) - 2) + [-1, 1])
            density = (m * in_alive).mean()
        out = m.reshape(-1, k.shape[-1]).max(axis=0) if k.out_axis == -1 else None
        eff.append(density)
        prev_out = out
    return eff
