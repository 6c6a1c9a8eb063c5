"""DP-SGD: per-sample clipping against brute force, and the RDP accountant."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpdl
import xpdl.functional as F
from xpdl import nn
from xpdl.losses import cross_entropy
from xpdl.privacy import ClippedStep, clipped_gradients, epsilon

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_epsilon_on_the_standard_setting():
    # Abadi et al.'s MNIST setting: sigma 1.1, batch 256 of 60,000, 60 epochs.
    eps = epsilon(1.1, 256 / 60000, 14062, 1e-5)
    assert eps == pytest.approx(2.6, rel=0.05)


SETTINGS = [(1.1, 256 / 60000, 14062, 1e-5), (1.0, 0.01, 1000, 1e-5), (0.8, 0.05, 500, 1e-6),
            (2.0, 0.001, 100000, 1e-5), (0.6, 0.02, 2000, 1e-5), (4.0, 0.1, 10, 1e-3)]


@pytest.mark.parametrize("setting", SETTINGS)
def test_epsilon_matches_opacus(setting):
    try:
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    except Exception:
        pytest.skip("opacus not installed")
    from xpdl.privacy import DEFAULT_ORDERS

    s, q, n, d = setting
    orders = list(DEFAULT_ORDERS)
    ref, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=q, noise_multiplier=s,
                                                              steps=n, orders=orders), delta=d)
    assert epsilon(s, q, n, d) == pytest.approx(float(ref), rel=1e-6)


def test_epsilon_of_a_history_composes_like_opacus():
    """Runs with different noise, rates and lengths: the RDP of each order adds up
    (Opacus's compute_rdp per run, summed, then its get_privacy_spent)."""
    try:
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    except Exception:
        pytest.skip("opacus not installed")
    from xpdl.privacy import DEFAULT_ORDERS, epsilon_of

    orders = list(DEFAULT_ORDERS)
    hist = [(1.0, 0.01, 300), (2.5, 0.05, 120), (0.8, 0.002, 1000)]
    rdp = sum(compute_rdp(q=q, noise_multiplier=s, steps=n, orders=orders) for s, q, n in hist)
    ref, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
    assert epsilon_of(hist, 1e-5) == pytest.approx(float(ref), rel=1e-6)
    assert epsilon_of(hist, 1e-5) > max(epsilon(s, q, n, 1e-5) for s, q, n in hist)
    assert epsilon_of(hist + [(0.0, 1.0, 1)], 1e-5) == math.inf
    assert epsilon_of([], 1e-5) == 0.0
    with pytest.raises(ValueError, match="non-negative number, got nan"):
        epsilon(float("nan"), 0.1, 10, 1e-5)
    # a step count is a whole number: 1.5 and True were accepted (linear in steps, so a
    # fractional epsilon came out), inf too; 1000.0 is a count written as a float
    for bad in (1.5, True, float("inf"), -1, float("nan"), "10", None):
        with pytest.raises(ValueError, match="steps must be a non-negative whole number"):
            epsilon(1.0, 0.1, bad, 1e-5)
    assert epsilon(1.0, 0.01, 1000.0, 1e-5) == epsilon(1.0, 0.01, np.int64(1000), 1e-5)


def test_epsilon_edge_cases_and_monotonicity():
    assert epsilon(0.0, 0.1, 10, 1e-5) == math.inf
    assert epsilon(1.0, 0.1, 0, 1e-5) == 0.0
    assert epsilon(1.0, 0.01, 200, 1e-5) < epsilon(1.0, 0.01, 400, 1e-5)
    assert epsilon(2.0, 0.01, 200, 1e-5) < epsilon(1.0, 0.01, 200, 1e-5)
    with pytest.raises(ValueError, match="delta"):
        epsilon(1.0, 0.1, 10, 0.0)
    with pytest.raises(ValueError, match="sample_rate"):
        epsilon(1.0, 1.5, 10, 1e-5)
    # arguments that are no numbers are named (delta="1e-5" was "'<' not supported")
    for args, name in [((1.0, 0.1, 10, "1e-5"), "delta"), (("1", 0.1, 10, 1e-5),
                       "noise_multiplier"), ((1.0, None, 10, 1e-5), "sample_rate"),
                       ((True, 0.1, 10, 1e-5), "noise_multiplier")]:
        with pytest.raises(TypeError, match=f"{name} must be a number"):
            epsilon(*args)
    assert epsilon(np.float32(1.0), np.float64(0.1), np.int64(10), np.float32(1e-5)) == \
        pytest.approx(epsilon(1.0, 0.1, 10, float(np.float32(1e-5))))


def _net(backend):
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    return nn.Sequential(nn.Linear(3, 5, rng=0, **kw), nn.Tanh(), nn.Linear(5, 4, rng=1, **kw))


def test_clipping_norm_is_a_positive_finite_number_numpy_scalars_included(backend):
    """np.float32(1.0) as max_grad_norm failed on array_api_strict ("Can't convert array on
    device1 to a NumPy array"); NaN made every clipped gradient NaN."""
    net = _net(backend)
    X = backend.asarray(np.random.default_rng(0).normal(size=(5, 3)))
    y = backend.asarray(np.arange(5) % 4, dtype=backend.xp.int64)

    def per(out):
        return cross_entropy(out, y, reduction="none")

    ref, ref_norms = clipped_gradients(net, X, per, 0.5)
    got, norms = clipped_gradients(net, X, per, np.float32(0.5))
    for k in ref:
        np.testing.assert_array_equal(backend.to_numpy(got[k]), backend.to_numpy(ref[k]))
    np.testing.assert_array_equal(backend.to_numpy(norms), backend.to_numpy(ref_norms))
    for C in (float("nan"), 0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="max_grad_norm must be positive and finite"):
            clipped_gradients(net, X, per, C)
    with pytest.raises(TypeError, match="max_grad_norm must be a number"):
        clipped_gradients(net, X, per, "1.0")


@pytest.mark.parametrize("C", [0.05, 1.0, 100.0])
def test_clipped_gradients_match_brute_force(backend, C):
    net = _net(backend)
    g = np.random.default_rng(0)
    Xh = g.normal(size=(7, 3))
    yh = g.integers(0, 4, size=7)
    X = backend.asarray(Xh)
    y = backend.asarray(yh, dtype=backend.xp.int64)
    sums, norms = clipped_gradients(net, X, lambda out: cross_entropy(out, y, reduction="none"),
                                    C)
    names = [n for n, _ in net.named_parameters()]
    params = [p.data for p in net.parameters()]
    expected = {n: 0.0 for n in names}
    exp_norms = []
    for i in range(7):
        xi = backend.asarray(Xh[i:i + 1])
        yi = backend.asarray(yh[i:i + 1], dtype=backend.xp.int64)

        def loss(W1, b1, W2, b2, xi=xi, yi=yi):
            return cross_entropy(F.linear(F.tanh(F.linear(xi, W1, b1)), W2, b2), yi)

        grads = [backend.to_numpy(a) for a in xpdl.grad(loss, argnums=(0, 1, 2, 3))(*params)]
        norm = math.sqrt(sum(float((a ** 2).sum()) for a in grads))
        exp_norms.append(norm)
        c = min(1.0, C / (norm + 1e-6))
        for n, a in zip(names, grads):
            expected[n] = expected[n] + c * a
    tol = 1e-10 if backend.is64 else 1e-4
    np.testing.assert_allclose(backend.to_numpy(norms), exp_norms, rtol=tol)
    for n in names:
        np.testing.assert_allclose(backend.to_numpy(sums[n]), expected[n], rtol=tol, atol=tol)
        assert sums[n].device == backend.device
    for p in net.parameters():  # the parameters are untouched and still trainable
        assert p.requires_grad and p.grad is None


def test_dp_training_reports_epsilon_and_uses_poisson_sampling(backend):
    X, y = xpdl.datasets.load_digits(dtype=np.float64)
    X, y = backend.asarray(X / 16), backend.asarray(y)
    m = xpdl.MLPClassifier((32,), max_iter=4, batch_size=64, learning_rate=1e-2,
                           dp_noise_multiplier=1.0, dp_max_grad_norm=1.0, random_state=0)
    m.fit(X, y)
    n = X.shape[0]
    steps = 4 * math.ceil(n / 64)
    assert m._steps == steps
    # t_ counts the samples seen (scikit-learn's): the Poisson batches' sizes, whose total
    # over the epochs has mean 4 n and standard deviation below sqrt(4 n)
    assert abs(m.t_ - 4 * n) < 5 * math.sqrt(4 * n)
    assert m.epsilon_ == pytest.approx(epsilon(1.0, 64 / n, steps, 1e-5))
    assert m.score(X, y) > 0.6
    clip_only = xpdl.MLPClassifier((8,), max_iter=2, dp_noise_multiplier=0.0,
                                   random_state=0).fit(X, y)
    assert clip_only.epsilon_ == math.inf


def test_dp_same_seed_same_model_across_backends(backend):
    if not backend.is64:
        pytest.skip("float64 comparison")
    X, y = xpdl.datasets.make_classification(48, 4, n_classes=3, random_state=0,
                                             dtype=np.float64)
    kw = dict(hidden_layer_sizes=(6,), max_iter=2, batch_size=16, learning_rate=1e-2,
              dp_noise_multiplier=0.7, dp_max_grad_norm=0.5, random_state=1)
    ref = xpdl.MLPClassifier(**kw).fit(X, y)
    m = xpdl.MLPClassifier(**kw).fit(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    np.testing.assert_allclose(backend.to_numpy(m.predict_proba(backend.asarray(X))),
                               ref.predict_proba(X), rtol=1e-8, atol=1e-10)
    assert m.epsilon_ == ref.epsilon_


def _same_clipping(backend, got, norms, want, want_norms):
    """Clipped sums bit for bit on NumPy (to rounding elsewhere) and the norms."""
    for k in want:
        if backend.name == "numpy":
            np.testing.assert_array_equal(got[k], want[k])
        else:
            np.testing.assert_allclose(backend.to_numpy(got[k]), backend.to_numpy(want[k]),
                                       rtol=1e-10 if backend.is64 else 1e-5, atol=1e-7)
    np.testing.assert_allclose(backend.to_numpy(norms), backend.to_numpy(want_norms),
                               rtol=1e-10 if backend.is64 else 1e-5)


@pytest.mark.parametrize("l2", [False, True])
def test_clipped_step_replays_and_equals_the_eager_clipping(backend, l2):
    """The DP step as a hook on the recorded program: after two recordings the linear
    layers' VJPs hand their output gradients to the clipping instead of forming weight
    gradients; the clipped sums, norms and per-sample losses equal the eager
    clipped_gradients (bit for bit on NumPy), zero weights included. A loss with an L2
    term on a weight (whose gradient is not a linear layer's) stays eager, with the same
    results."""
    net = _net(backend)
    W = net[0].weight

    def per_sample(out, t):
        per = cross_entropy(out, t, reduction="none")
        return per + xpdl.autodiff.ops.sqnorm(W) * 1e-2 if l2 else per

    step = ClippedStep(net, per_sample)
    g = np.random.default_rng(0)
    for i in range(5):
        X = backend.asarray(g.normal(size=(9, 3)))
        y = backend.asarray(g.integers(0, 4, size=9), dtype=backend.xp.int64)
        w = backend.asarray(np.r_[g.uniform(0.1, 3.0, 7), 0.0, 1.0])
        C = (0.05, 1.0, 100.0)[i % 3]
        got, norms, per = step(X, y, C, weights=w)
        want, want_norms = clipped_gradients(net, X, lambda out, y=y: per_sample(out, y), C,
                                             weights=w)
        want_per = per_sample(net(X), y)
        _same_clipping(backend, got, norms, want, want_norms)
        np.testing.assert_allclose(backend.to_numpy(per), backend.to_numpy(want_per),
                                   rtol=1e-10 if backend.is64 else 1e-5)
    assert step.mode == ("eager" if l2 else "replay")
    assert step.recordings == (1 if l2 else 2)


def test_clipped_step_with_dropout_replays_with_the_tape_masks(backend):
    """Dropout inside a DP step: the replayed clipping draws one mask per step, in the
    tape's order, so it equals eager clipped_gradients on a twin network whose dropout
    generator has the same seed (bit for bit on NumPy), step after step."""
    def net():
        kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
        return nn.Sequential(nn.Linear(3, 6, rng=0, **kw), nn.ReLU(),
                             nn.Dropout(0.4, rng=xpdl.random.Generator(5)),
                             nn.Linear(6, 4, rng=1, **kw))

    a, b = net(), net()
    step = ClippedStep(a, lambda out, t: cross_entropy(out, t, reduction="none"))
    g = np.random.default_rng(0)
    for _ in range(6):
        X = backend.asarray(g.normal(size=(9, 3)))
        y = backend.asarray(g.integers(0, 4, size=9), dtype=backend.xp.int64)
        got, norms, _ = step(X, y, 0.5)
        want, want_norms = clipped_gradients(
            b, X, lambda out, y=y: cross_entropy(out, y, reduction="none"), 0.5)
        _same_clipping(backend, got, norms, want, want_norms)
    assert step.mode == "replay" and step.recordings == 2


def test_dp_fit_trains_through_the_replayed_clipping(backend):
    X, y = xpdl.datasets.load_digits(dtype=np.float64)
    m = xpdl.MLPClassifier((16,), max_iter=2, batch_size=64, dp_noise_multiplier=1.0,
                           random_state=0).fit(backend.asarray(X / 16), backend.asarray(y))
    step = m._dp_cache[1]
    assert step.mode == "replay"
    # Poisson batches padded to multiples of 8: a few programs for about 56 steps
    assert len(step._programs) <= 8 and step.recordings < 28


@pytest.mark.filterwarnings("ignore:xpdl.*max_iter")
def test_epsilon_covers_every_step_whatever_changed(backend, tmp_path):
    """epsilon_ accounts for all noisy steps the parameters went through: a warm continuation
    with more noise or another batch size composes (it used to be recomputed from the
    current settings alone: 9.0 -> 1.7 after raising the noise); steps without noise, before
    or after, make it infinite; the history survives save/load; a fresh fit starts over."""
    from xpdl.privacy import epsilon_of

    X, y = xpdl.datasets.make_classification(48, 4, n_classes=3, random_state=0,
                                             dtype=np.float64)
    X, y = backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64)
    m = xpdl.MLPClassifier((6,), batch_size=16, dp_noise_multiplier=1.0, random_state=0)
    for _ in range(2):
        m.partial_fit(X, y, classes=[0, 1, 2])
    hist = [(1.0, 16 / 48, 6)]
    assert m.epsilon_ == epsilon_of(hist, 1e-5) == epsilon(1.0, 16 / 48, 6, 1e-5)
    before = m.epsilon_
    m.set_params(dp_noise_multiplier=4.0).partial_fit(X, y)
    hist.append((4.0, 16 / 48, 3))
    assert m.epsilon_ == epsilon_of(hist, 1e-5) and m.epsilon_ > before
    m.set_params(batch_size=24, warm_start=True, max_iter=2).fit(X, y)  # no stop on tol
    hist.append((4.0, 24 / 48, 4))
    assert m.n_iter_ == 5 and m.epsilon_ == pytest.approx(epsilon_of(hist, 1e-5), rel=1e-12)
    path = tmp_path / "dp.safetensors"
    xpdl.save(m, path)
    back = xpdl.load(path, xp=backend.xp, device=backend.device)
    back.partial_fit(X, y)
    hist[-1] = (4.0, 24 / 48, 6)
    assert back.epsilon_ == pytest.approx(epsilon_of(hist, 1e-5), rel=1e-12)
    m.set_params(dp_noise_multiplier=None).partial_fit(X, y)  # an epoch without noise
    assert m.epsilon_ == math.inf
    plain = xpdl.MLPClassifier((6,), batch_size=16, random_state=0).partial_fit(
        X, y, classes=[0, 1, 2])
    assert not hasattr(plain, "epsilon_")
    plain.set_params(dp_noise_multiplier=1.0).partial_fit(X, y)  # trained without DP first
    assert plain.epsilon_ == math.inf
    m.set_params(warm_start=False, dp_noise_multiplier=1.0, batch_size=16).fit(X, y)
    assert m.epsilon_ == epsilon(1.0, 16 / 48, 2 * 3, 1e-5)  # a fresh fit starts over
    with pytest.raises(ValueError, match="early_stopping cannot be used with DP-SGD"):
        xpdl.MLPClassifier(dp_noise_multiplier=1.0, early_stopping=True).fit(X, y)


@pytest.mark.filterwarnings("ignore:xpdl.*max_iter")
def test_files_without_a_privacy_history_load_with_an_upper_bound(backend, tmp_path):
    """A file written before the history was kept (only the DP step count) is continued
    with the bound of sampling rate 1 for its old steps, never an epsilon_ below the true
    one; a corrupted history is a ValueError."""
    import json
    import struct

    from safetensors.numpy import load_file

    from xpdl import io as xio
    from xpdl.privacy import epsilon_of

    X, y = xpdl.datasets.make_classification(48, 4, n_classes=3, random_state=0,
                                             dtype=np.float64)
    m = xpdl.MLPClassifier((6,), batch_size=16, max_iter=2, dp_noise_multiplier=1.0,
                           random_state=0).fit(X, y)
    xpdl.save(m, tmp_path / "new.safetensors")
    buf = (tmp_path / "new.safetensors").read_bytes()
    n = struct.unpack("<Q", buf[:8])[0]
    meta = json.loads(json.loads(buf[8:8 + n])["__metadata__"]["xpdl"])
    arrays = load_file(tmp_path / "new.safetensors")

    def write(name, fitted):
        meta["fitted"] = fitted
        (tmp_path / name).write_bytes(xio._encode(arrays, meta))
        return tmp_path / name

    old = {k: v for k, v in meta["fitted"].items() if k != "_dp_history"}
    back = xpdl.load(write("old.safetensors", dict(old)), xp=backend.xp,
                     device=backend.device)
    assert back.epsilon_ == m.epsilon_  # as saved, until trained further
    back.partial_fit(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    assert back.epsilon_ == epsilon_of([(1.0, 1.0, 6), (1.0, 16 / 48, 3)], 1e-5)
    assert back.epsilon_ > epsilon(1.0, 16 / 48, 9, 1e-5)
    for bad in ([[1.0, 2.0, 3]], [[-1.0, 0.5, 3]], [[1.0, 0.5, 2.5]], [1.0]):
        with pytest.raises(ValueError, match="privacy history"):
            xpdl.load(write("bad.safetensors", {**old, "_dp_history": bad}))
    # Format 2 counted the optimizer steps in t_ (now samples seen): its files' t_ is read
    # as the step count, so 3 steps without noise before the 6 noisy ones are seen
    # (epsilon_ infinite once trained on), and t_ counts samples from the load on.
    legacy = {k: v for k, v in old.items() if k not in ("_steps", "t_")}
    meta["format_version"] = 2
    back = xpdl.load(write("v2.safetensors", {**legacy, "t_": old["_steps"] + 3}),
                     xp=backend.xp, device=backend.device)
    assert back._steps == 9 and "t_" not in back.__dict__
    back.partial_fit(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    assert back._steps == 12 and back.epsilon_ == math.inf
    # this call's Poisson batches only: the same draws as the format-3 file continued
    cont = xpdl.load(tmp_path / "new.safetensors", xp=backend.xp, device=backend.device)
    cont.partial_fit(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    assert 0 < back.t_ == cont.t_ - m.t_


def test_dp_parameter_validation():
    X, y = xpdl.datasets.make_classification(40, 3, random_state=0)
    with pytest.raises(ValueError, match="dp_max_grad_norm"):
        xpdl.MLPClassifier(dp_noise_multiplier=1.0, dp_max_grad_norm=0.0).fit(X, y)
    with pytest.raises(ValueError, match="dp_delta"):
        xpdl.MLPClassifier(dp_noise_multiplier=1.0, dp_delta=2.0).fit(X, y)


WEIGHTS = [1e3, 1.0, 0.5, 0.0, 20.0, 1e-3, 3.0]


def test_weighted_contributions_are_clipped_after_weighting(backend):
    """Each sample's contribution w_i g_i is clipped as a whole: checked one sample at a
    time (norm at most C) and summed against per-sample gradients from autodiff."""
    C = 0.5
    net = _net(backend)
    g = np.random.default_rng(3)
    Xh = g.normal(size=(7, 3))
    yh = g.integers(0, 4, size=7)
    X = backend.asarray(Xh)
    y = backend.asarray(yh, dtype=backend.xp.int64)
    w = backend.asarray(np.array(WEIGHTS))
    names = [n for n, _ in net.named_parameters()]
    params = [p.data for p in net.parameters()]
    slack = 1 + (1e-9 if backend.is64 else 1e-5)
    expected = {n: 0.0 for n in names}
    for i in range(7):
        yi = y[i:i + 1]
        one, _ = clipped_gradients(net, X[i:i + 1, :],
                                   lambda out, yi=yi: cross_entropy(out, yi, reduction="none"),
                                   C, weights=w[i:i + 1])
        contribution = math.sqrt(sum(float((backend.to_numpy(a) ** 2).sum())
                                     for a in one.values()))
        assert contribution <= C * slack, (i, WEIGHTS[i], contribution)

        def loss(W1, b1, W2, b2, xi=X[i:i + 1, :], yi=yi):
            return cross_entropy(F.linear(F.tanh(F.linear(xi, W1, b1)), W2, b2), yi)

        grads = [WEIGHTS[i] * backend.to_numpy(a)
                 for a in xpdl.grad(loss, argnums=(0, 1, 2, 3))(*params)]
        norm = math.sqrt(sum(float((a ** 2).sum()) for a in grads))
        if WEIGHTS[i] >= 20:  # heavy samples really are cut back to C
            assert norm > 2 * C and contribution == pytest.approx(C, rel=1e-4)
        c = min(1.0, C / (norm / WEIGHTS[i] + 1e-6) / WEIGHTS[i]) if WEIGHTS[i] else 0.0
        for n, a in zip(names, grads):
            expected[n] = expected[n] + c * a
    sums, norms = clipped_gradients(net, X, lambda out: cross_entropy(out, y, reduction="none"),
                                    C, weights=w)
    tol = 1e-10 if backend.is64 else 1e-4
    for n in names:
        np.testing.assert_allclose(backend.to_numpy(sums[n]), expected[n], rtol=tol, atol=tol)


def test_dp_fit_one_heavy_sample_moves_the_model_by_at_most_C(backend):
    """Neighbouring datasets (a sample of weight 1e6 present, or weighted 0): one noiseless
    full-batch SGD step with learning rate 1 differs by at most C / B in the parameters,
    as the accountant assumes; without DP the same sample moves the model much further."""
    X, y = xpdl.datasets.make_classification(40, 4, n_classes=3, random_state=0,
                                             dtype=np.float64)
    C, n = 0.5, 40
    w_in = np.ones(n)
    w_in[7] = 1e6
    w_out = w_in.copy()
    w_out[7] = 0.0
    kw = dict(hidden_layer_sizes=(6,), optimizer="sgd", learning_rate=1.0, alpha=0.0,
              batch_size=n, max_iter=1, dp_noise_multiplier=0.0, dp_max_grad_norm=C,
              random_state=0)

    def params(m):
        return np.concatenate([np.ravel(backend.to_numpy(p.data)).astype(np.float64)
                               for p in m.module_.parameters()])

    Xb, yb = backend.asarray(X), backend.asarray(y)
    a = xpdl.MLPClassifier(**kw).fit(Xb, yb, sample_weight=backend.asarray(w_in))
    b = xpdl.MLPClassifier(**kw).fit(Xb, yb, sample_weight=backend.asarray(w_out))
    assert a._steps == b._steps == 1 and a.t_ == b.t_ == n  # (a Poisson rate of 1)
    moved = np.linalg.norm(params(a) - params(b)) * n
    # (float32: the two models' parameters round independently, ~1e-7 each)
    assert moved <= C * (1 + (1e-9 if backend.is64 else 1e-5))
    assert moved > 0.5 * C  # the heavy sample does count, up to the bound


@pytest.mark.parametrize("q,sigma,alpha", [(0.5, 1.0, 1.5), (0.3, 0.8, 2.5), (0.1, 1.0, 3.7),
                                           (0.01, 1.1, 10.9), (0.5, 2.0, 5.5),
                                           (0.2, 0.5, 1.1)])
def test_fractional_order_matches_the_integral_definition(q, sigma, alpha):
    """A_alpha = E_{z ~ N(0, s^2)}[((1-q) + q exp((2z - 1) / (2 s^2)))^alpha], integrated
    numerically in 30 digits: an independent reference for the series."""
    mp = pytest.importorskip("mpmath")
    from xpdl.privacy import _log_a_frac

    mp.mp.dps = 30
    s = sigma

    def f(z):
        return mp.npdf(z, 0, s) * ((1 - q) + q * mp.exp((2 * z - 1) / (2 * s * s))) ** alpha

    ref = float(mp.log(mp.quad(f, [-mp.inf, -10 * s, 0, 1, 10 * s + 1, mp.inf])))
    assert _log_a_frac(q, sigma, alpha) == pytest.approx(ref, rel=1e-10)


def test_accountant_sums_tens_of_terms_for_large_sampling_rates(monkeypatch):
    """The series for large q fall off like a power of the index (thousands of terms to
    e^-30); the accelerated sum needs tens per order. Counted, not timed."""
    import xpdl.privacy as P

    calls = [0]
    real = P._log_erfc

    def counting(x):
        calls[0] += 1
        return real(x)

    monkeypatch.setattr(P, "_log_erfc", counting)
    n_frac = sum(1 for a in P.DEFAULT_ORDERS if not float(a).is_integer())
    for q in (0.1, 0.3, 0.5):
        calls[0] = 0
        assert math.isfinite(epsilon(1.0, q, 100, 1e-5))
        assert calls[0] / 2 / n_frac < 60, (q, calls[0])
