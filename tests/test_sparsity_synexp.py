"""SynExp: weight-level Monte Carlo equals (prod p) R; channel-level coupling departs from it."""

import keras
import pytest

from tf_precrop import sparsity


def _chain():
    keras.utils.set_random_seed(2)
    inp = keras.Input((6,))
    x = keras.layers.Dense(8, use_bias=False, name="d1")(inp)
    x = keras.layers.Dense(8, use_bias=False, name="d2")(x)
    return keras.Model(inp, keras.layers.Dense(3, use_bias=False, name="d3")(x), name="chain")


def test_weight_level_synexp_matches_product_of_densities():
    model = _chain()
    dens = {"d1/kernel": 0.5, "d2/kernel": 0.25, "d3/kernel": 0.5}
    est = sparsity.synexp(model, dens, granularity="weight", samples=400, seed=0)
    assert est["dense"] == pytest.approx(sparsity.synflow_objective(model))
    assert est["prod_density"] == pytest.approx(0.5 * 0.25 * 0.5)
    # Each path crosses one weight per layer: E[R(θ ⊙ M)] = (prod p) R(θ) exactly.
    assert abs(est["mean"] - est["predicted"]) < 4 * est["stderr"], est
    filt = sparsity.synexp(model, dens, granularity="filter", samples=400, seed=1)
    assert abs(filt["mean"] - filt["predicted"]) < 4 * filt["stderr"], filt


def test_channel_level_synexp_departs_from_product_of_layer_densities():
    model = _chain()
    ratios = {"d1/kernel": 0.5, "d2/kernel": 0.5}  # output channels kept; d3's 3 outputs stay
    est = sparsity.synexp(model, ratios, granularity="channel", samples=400, seed=0)
    # Effective layer densities: d1 0.5, d2 0.5 x 0.5, d3 0.5 -> prod p = 1/16, but a path only
    # needs its two hidden channels: SynExp = c1 c2 R = R / 4, four times (prod p) R.
    assert est["prod_density"] == pytest.approx(1 / 16)
    assert abs(est["mean"] - est["dense"] / 4) < 4 * est["stderr"], est
    assert est["ratio"] == pytest.approx(4.0, rel=0.15)
    print(f"channel-level SynExp / ((prod p) R) = {est['ratio']:.3f} (theory 4)")


def test_synexp_errors():
    model = _chain()
    with pytest.raises(ValueError) as info:
        sparsity.synexp(model, {}, granularity="row")
    assert str(info.value) == (
        "`granularity` must be one of ('weight', 'kernel', 'filter', 'channel'). Received: granularity='row'"
    )
    with pytest.raises(ValueError) as info:
        sparsity.synexp(model, {}, samples=1)
    assert str(info.value) == "`samples` must be an int >= 2. Received: samples=1"
