"""Masks: global selection to an exact budget, random masks, masked costs.

A mask is a float32 array of 0/1 with the kernel's shape, keyed
``"<layer path>/<attribute>"`` (see :mod:`tf_precrop.sparsity.prunable`).
Masks are plain numpy, computed on the Keras 3 model, so they apply to any
twin with the same layer names (the tf_keras/TF-MOT twin included).
"""

import numpy as np

from tf_precrop.sparsity import prunable

GRANULARITIES = ("weight", "kernel", "filter")


class Masks(dict):
    """``dict[str, np.ndarray]`` of 0/1 float32 masks, plus ``info``.

    Attributes:
        info: Dict describing how the masks were made (method, budget,
            achieved cost); filled by the mask functions.

    Example:
        >>> masks = sparsity.synflow(model, flops=0.5)
        >>> masks.densities()["conv1/kernel"]
        0.93
    """

    def __init__(self, masks, info=None):
        super().__init__(masks)
        self.info = dict(info or {})

    def densities(self):
        """Per-kernel density (fraction of ones).

        Returns:
            A dict ``{kernel key: density}``.
        """
        return {k: float(v.mean()) for k, v in self.items()}


def mask_arrays(kernels, masks):
    """Aligns masks with kernels after checking keys and shapes.

    Args:
        kernels: :class:`~tf_precrop.sparsity.prunable.PrunableKernel` list.
        masks: ``{kernel key: 0/1 array}``.

    Returns:
        One array per kernel, ``None`` where ``masks`` has no entry (dense).

    Raises:
        ValueError: If a key is unknown or a shape does not match.
    """
    known = {k.key for k in kernels}
    unknown = sorted(set(masks) - known)
    if unknown:
        raise ValueError(
            f"`masks` has keys that are not prunable kernels of the model: {unknown}. "
            f"Known keys start with: {sorted(known)[:5]}"
        )
    out = []
    for k in kernels:
        if k.key not in masks:
            out.append(None)
            continue
        m = np.asarray(masks[k.key])
        if m.shape != k.shape:
            raise ValueError(
                f"Mask '{k.key}' has shape {m.shape} but the kernel has shape {k.shape}."
            )
        out.append(m)
    return out


_SIGN = np.int64(0x7FFFFFFFFFFFFFFF)


def _key(value):
    """Order-preserving map of a float64 to an int64."""
    i = np.array(value, dtype=np.float64).view(np.int64)
    return int(i ^ ((i >> 63) & _SIGN))


def _value(key):
    """Inverse of :func:`_key`."""
    i = np.int64(key)
    return float(np.array(i ^ ((i >> 63) & _SIGN), dtype=np.int64).view(np.float64))


def select_top(kernels, scores, *, max_macs=None, max_weights=None):
    """Keeps the globally highest scores while the kept cost fits the budget.

    Weights are ranked by score over all kernels; the kept set is every weight
    scoring at least a threshold ``t``, the lowest one whose set fits all
    limits, plus as many weights tied at the next lower score as still fit
    (in kernel order). Effective MACs count ``macs / weights`` of a weight's
    kernel. The binding budget is met to within one weight's cost. The
    threshold is found by bisection over the float64 order with per-kernel
    sorted scores: no global argsort, so 25M weights take about a second.

    Args:
        kernels: :class:`~tf_precrop.sparsity.prunable.PrunableKernel` list.
        scores: One score array per kernel (same shapes); ``-inf`` is never
            kept.
        max_macs: Kept kernel MACs allowed, or ``None``.
        max_weights: Kept kernel weights allowed, or ``None``.

    Returns:
        A list of boolean arrays, one per kernel.

    Raises:
        ValueError: If a score is NaN.

    Example:
        >>> keep = select_top(kernels, [np.abs(k.variable.numpy()) for k in kernels],
        ...                   max_weights=1000)
    """
    scores = [np.asarray(s, dtype=np.float64) for s in scores]
    if any(np.isnan(s).any() for s in scores):
        raise ValueError("Scores contain NaN; the model's weights or gradients are not finite.")
    ordered = [np.sort(s.ravel()) for s in scores]
    cost = np.array([k.macs_per_weight for k in kernels])
    limit_w = np.inf if max_weights is None else float(np.floor(max_weights + 1e-9))
    limit_m = np.inf if max_macs is None else max_macs * (1 + 1e-12)

    def counts(t):
        return np.array([o.size - np.searchsorted(o, t, side="left") for o in ordered])

    def fits(c):
        return c.sum() <= limit_w and float(c @ cost) <= limit_m

    finite = [o[np.isfinite(o)] for o in ordered]
    lows = [f[0] for f in finite if f.size]
    highs = [f[-1] for f in finite if f.size]
    if not lows:
        return [np.zeros(k.shape, dtype=bool) for k in kernels]
    lo, hi = _key(min(lows)), _key(max(highs)) + 1  # hi keeps nothing: always fits.
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(counts(_value(mid))):
            hi = mid
        else:
            lo = mid + 1
    threshold = _value(lo)
    kept = counts(threshold)
    rem_w = limit_w - kept.sum()
    rem_m = limit_m - float(kept @ cost)
    below = [o[o.size - c - 1] if o.size > c else -np.inf for o, c in zip(ordered, kept)]
    tie = max(below)
    out = []
    for k, s, c in zip(kernels, scores, cost):
        keep = s >= threshold
        if np.isfinite(tie):
            tied = np.flatnonzero(s.ravel() == tie)
            take = int(min(tied.size, rem_w, np.floor(rem_m / c)))
            if take > 0:
                keep.ravel()[tied[:take]] = True
                rem_w -= take
                rem_m -= take * c
        out.append(keep.reshape(k.shape))
    return out


def _unit_axes(kernel, granularity):
    """Kernel axes spanned by one mask unit's index (the rest is broadcast)."""
    ndim = len(kernel.shape)
    if granularity == "weight":
        return tuple(range(ndim))
    if granularity == "kernel":  # One k x k (x k) slice per (in, out) pair.
        return tuple(range(max(ndim - 2, 0), ndim))
    return kernel.channel_axes


def random_masks(model, densities, *, granularity="weight", seed=0):
    """Random masks at given per-kernel densities.

    Each kernel keeps ``max(1, round(p * units))`` units drawn uniformly
    without replacement, where a unit is a single weight (``"weight"``), a
    ``k x k`` kernel slice of one (input, output) channel pair (``"kernel"``;
    a single weight for ``Dense``) or a whole output filter (``"filter"``,
    drawn independently per layer; for a depthwise kernel one output channel,
    i.e. one ``k x k`` slice).

    Args:
        model: A built Keras 3 model.
        densities: ``{kernel key: density in [0, 1]}``; kernels not listed stay
            dense, a density of 0 empties the kernel.
        granularity: One of ``"weight"``, ``"kernel"``, ``"filter"``.
        seed: Seed of the random generator.

    Returns:
        :class:`Masks`.

    Raises:
        ValueError: On an unknown granularity, an unknown kernel key or a
            density outside [0, 1].

    Example:
        >>> masks = random_masks(model, {"conv1/kernel": 0.5}, granularity="filter")
    """
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"`granularity` must be one of {GRANULARITIES}. "
            f"Received: granularity={granularity!r}"
        )
    kernels = prunable.prunable_kernels(model)
    known = {k.key for k in kernels}
    unknown = sorted(set(densities) - known)
    if unknown:
        raise ValueError(
            f"`densities` has keys that are not prunable kernels of the model: {unknown}"
        )
    rng = np.random.default_rng(seed)
    out = {}
    for k in kernels:
        p = float(densities.get(k.key, 1.0))
        if not 0.0 <= p <= 1.0:
            raise ValueError(
                f"Density of '{k.key}' must be in [0, 1]. Received: densities['{k.key}']={p}"
            )
        axes = _unit_axes(k, granularity)
        unit_shape = tuple(k.shape[a] for a in axes)
        units = int(np.prod(unit_shape))
        keep = 0 if p == 0 else max(1, int(round(p * units)))
        unit_mask = np.zeros(units, dtype=np.float32)
        unit_mask[rng.permutation(units)[:keep]] = 1.0
        shape = [1] * len(k.shape)
        for a, s in zip(axes, unit_shape):
            shape[a] = s
        out[k.key] = np.broadcast_to(unit_mask.reshape(shape), k.shape).copy()
    return Masks(out, {"method": "random", "granularity": granularity, "seed": seed})


def masked_cost(model, masks):
    """Effective and dense-executed cost of a model under masks.

    Args:
        model: A built Keras 3 model.
        masks: ``{kernel key: 0/1 array}``; missing kernels count as dense.

    Returns:
        A dict with ``macs`` (effective: kept kernel weights x positions),
        ``params`` (kept kernel weights + all non-kernel parameters),
        ``density`` (kept / all kernel weights), ``macs_ratio``,
        ``params_ratio``, ``dense_macs``, ``dense_params`` and
        ``executed_macs`` (what dense kernels execute: masks skip nothing).

    Raises:
        ValueError: If a key is unknown or a shape does not match.

    Example:
        >>> masked_cost(model, sparsity.uniform(model, flops=0.5))["macs_ratio"]
        0.5
    """
    kernels = prunable.prunable_kernels(model)
    arrays = mask_arrays(kernels, masks)
    kept_w = kept_macs = 0.0
    for k, m in zip(kernels, arrays):
        n = k.weights if m is None else float(np.count_nonzero(m))
        kept_w += n
        kept_macs += n * k.macs_per_weight
    dense_macs = sum(k.macs for k in kernels)
    dense_w = sum(k.weights for k in kernels)
    dense_params = model.count_params()
    params = dense_params - dense_w + kept_w
    return {
        "macs": int(round(kept_macs)),
        "params": int(round(params)),
        "density": kept_w / dense_w,
        "macs_ratio": kept_macs / dense_macs,
        "params_ratio": params / dense_params,
        "dense_macs": int(dense_macs),
        "dense_params": int(dense_params),
        "executed_macs": int(dense_macs),
    }


def channel_masks(model, plan, *, seed=0):
    """Random channel-level masks at a crop plan's widths, consistent across layers.

    Every channel group of ``model`` (the channels tied by adds, concatenations,
    depthwise convs ...; see docs/method.md) keeps a random subset of its
    channels, as many as ``plan`` gives the group. A kernel keeps exactly the
    weights whose input channel *and* output channel are kept, so a layer's
    input channels follow the previous layer's kept filters: no kept weight
    reads a pruned channel, and the live MACs equal the masked MACs and the
    plan's MACs (a random model of PreCrop's shape, with PreCrop's per-layer
    densities). This is the filter-granularity arm of the granularity benchmark;
    ``random_masks(..., granularity="filter")`` instead draws each layer's
    filters independently, whose next layer then mostly reads pruned channels.

    Args:
        model: A built Keras 3 model.
        plan: A ``tf_precrop.CropPlan`` of ``model`` (from ``tf_precrop.plan``).
        seed: Seed of the random channel subsets.

    Returns:
        :class:`Masks` for every prunable kernel.

    Raises:
        ValueError: If ``plan`` was made for another model (its groups differ),
            or a kernel's channel layout is not one the masks can follow (a
            fractional layout multiplier).

    Example:
        >>> plan = tf_precrop.plan(model, flops=0.25)
        >>> masks = sparsity.channel_masks(model, plan, seed=0)
        >>> masked_cost(model, masks)["macs"] == plan.macs
        True
    """
    from tf_precrop.graph import ModelGraph  # pylint: disable=g-import-not-at-top  (no cycle at import)

    graph = ModelGraph(model)
    groups = graph.groups
    planned = {g.id: (g.dense_width, g.width) for g in plan.groups}
    if sorted(planned) != sorted(groups.roots()) or any(
            planned[r][0] != groups.dense_width(r) for r in groups.roots()):
        raise ValueError(f"`plan` was made for another model than '{model.name}' (its channel groups "
                         f"differ). Received: plan of model '{plan.model_name}'")
    rng = np.random.default_rng(seed)
    kept = {}
    for root in sorted(planned):
        dense_width, width = planned[root]
        keep = np.zeros(dense_width, dtype=np.float32)
        keep[rng.permutation(dense_width)[:width]] = 1.0
        kept[root] = keep

    def layout_keep(layout, path):
        parts = []
        for segment in layout:
            root, factor = groups.find(segment.group)
            if factor != 1 or segment.mult.denominator != 1:  # a Flatten repeats channels per position
                raise ValueError(f"Layer '{path}': channel_masks cannot follow a channel layout scaled "
                                 f"by {segment.mult * factor} (a depth multiplier or tied width ratio).")
            parts.append(np.tile(kept[root], int(segment.mult)))
        return np.concatenate(parts)

    out = {}
    for k in prunable.prunable_kernels(model):
        record = graph.records[k.path]
        keep_in = layout_keep(record.in_layouts[0], k.path)
        depthwise = len(k.channel_axes) == 2
        ndim = len(k.shape)
        if depthwise:  # (..., in channels, multiplier): one output channel per (c, j), alive with c
            mask = np.broadcast_to(keep_in[:, None], k.shape[-2:])
        else:
            keep_out = layout_keep(record.out_layouts[0], k.path)
            in_axis = ndim - 2 if k.out_axis == -1 else ndim - 1
            shape_in, shape_out = [1] * ndim, [1] * ndim
            shape_in[in_axis], shape_out[ndim + k.out_axis] = keep_in.size, keep_out.size
            mask = keep_in.reshape(shape_in) * keep_out.reshape(shape_out)
        out[k.key] = np.broadcast_to(mask, k.shape).astype(np.float32).copy()
    return Masks(out, {"method": "channel", "granularity": "channel", "seed": seed,
                       "plan_macs": plan.macs})


def live_macs(model, masks):
    """MACs of the kept weights that read a live channel (what masked training really computes).

    A channel is live when some kept weight of its producing layer reads a live
    channel (the network inputs are live; an ``Add`` output channel is live when
    any input's is; layers without kernels pass liveness through). A kept weight
    reading a dead channel, e.g. after ``random_masks(..., granularity="filter")``
    pruned the previous layer's filter, multiplies a constant and does no useful
    work, so ``masked_cost`` overstates such masks' MACs. For
    :func:`channel_masks` the two agree.

    Args:
        model: A built Keras 3 functional or Sequential model (no nested models).
        masks: ``{kernel key: 0/1 array}``; missing kernels count as dense.

    Returns:
        The live MACs (float).

    Raises:
        ValueError: On a nested model or a kernel-free layer that changes the
            channel count (its liveness cannot be followed).

    Example:
        >>> live_macs(model, sparsity.channel_masks(model, tf_precrop.plan(model, flops=0.25)))
    """
    import keras  # pylint: disable=g-import-not-at-top
    from tf_precrop.graph import walker  # pylint: disable=g-import-not-at-top

    functional = walker.functional_graph(model)
    kernels = {k.key: k for k in prunable.prunable_kernels(model)}
    live = {id(t): np.ones(t.shape[-1], bool) for t in functional.inputs}
    total = 0.0
    for node in walker.topological_nodes(functional):
        layer = node.operation
        if not node.input_tensors:
            continue
        if isinstance(layer, keras.Model):
            raise ValueError(f"live_macs does not follow nested models. Received: layer '{layer.name}'")
        ins = [live[id(t)] for t in node.input_tensors]
        key = f"{layer.name}/kernel"
        if key in kernels and len(kernels[key].channel_axes) == 1 and kernels[key].out_axis == -1:
            k = kernels[key]
            m = np.asarray(masks[key], bool) if key in masks else np.ones(k.shape, bool)
            pairs = m.reshape(-1, *k.shape[-2:])
            used = pairs & ins[0][None, :, None]
            total += float(used.sum()) * k.macs_per_weight
            out = used.any(axis=(0, 1))
        elif isinstance(layer, keras.layers.Add):
            out = np.logical_or.reduce(ins)
        elif isinstance(layer, keras.layers.Concatenate):
            out = np.concatenate(ins)
        elif any(kernels.get(f"{layer.name}/{a}") for a in prunable.kernel_attrs(layer)):
            raise ValueError(f"live_macs follows Conv and Dense kernels only. Received: layer "
                             f"'{layer.name}' ({type(layer).__name__})")
        else:
            out = ins[0]
        for t in node.output_tensors:
            if t.shape[-1] != out.size:
                raise ValueError(f"live_macs cannot follow layer '{layer.name}' ({type(layer).__name__}): "
                                 f"it maps {out.size} channels to {t.shape[-1]}.")
            live[id(t)] = out
    return total
