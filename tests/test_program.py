"""The recorded/replayed training step (xpdl.compile_step) against the eager tape, which
is itself tested against finite differences and PyTorch; and the tape freeing its graph."""

from __future__ import annotations

import functools
import gc
import warnings
import weakref

import numpy as np
import pytest

import xpdl
import xpdl.functional as F
from xpdl import MLPClassifier, MLPRegressor, Tensor, nn, optim
from xpdl import _namespace as _ns
from xpdl import losses as L
from xpdl.random import Generator

pytestmark = pytest.mark.filterwarnings("ignore:xpdl.*max_iter")

OPTIMIZERS = {
    "gd": lambda m: optim.GD(m, lr=0.05),
    "sgd": lambda m: optim.SGD(m, lr=0.05),
    "momentum": lambda m: optim.SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda m: optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda m: optim.Adam(m, lr=1e-2, weight_decay=1e-3),
    "adamw": lambda m: optim.AdamW(m, lr=1e-2),
    "amsgrad": lambda m: optim.AdamW(m, lr=1e-2, weight_decay=1e-3, amsgrad=True),
    "rmsprop": lambda m: optim.RMSprop(m, lr=1e-3, momentum=0.5, centered=True),
    "adagrad": lambda m: optim.Adagrad(m, lr=1e-2),
}

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _net(backend, act="relu", k=3, dropout=0.0, seed=0, p=5):
    g = Generator(seed)
    kw = dict(rng=g, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    layers = [nn.Linear(p, 12, **kw), ACTS[act]()]
    if dropout:
        layers.append(nn.Dropout(dropout, rng=g))
    layers += [nn.Linear(12, 7, **kw), ACTS[act](), nn.Linear(7, k, **kw)]
    return nn.Sequential(*layers)


def _loss(name):
    """``loss_fn(out, y, w=None)`` for each loss, weights and an L2 term included."""

    def fn(out, y, w=None):
        if name == "cross_entropy":
            per = L.cross_entropy(out, y, reduction="none")
        elif name == "cross_entropy_probs":
            per = L.cross_entropy(out, F.softmax(y * 1.0, axis=1), reduction="none")
        elif name == "bce_logits":
            per = L.binary_cross_entropy_with_logits(out[:, 0], y, reduction="none")
        elif name == "bce":
            per = L.binary_cross_entropy(F.sigmoid(out[:, 0]), y, reduction="none")
        elif name == "mse":
            per = F.mean(L.mse(out, y, reduction="none"), axis=1)
        elif name == "mae":
            per = F.sum(L.mae(out, y, reduction="none"), axis=1)
        else:
            per = F.mean(L.huber(out, y, delta=0.5, reduction="none"), axis=1)
        data = F.mean(per) if w is None else F.mean(per * w)
        return data + xpdl.autodiff.ops.sqnorm(out) * 0.0 + F.logsumexp(out) * 1e-3

    return fn


def _batches(backend, loss, n=90, p=5, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, p))
    if loss == "cross_entropy":
        y, k = backend.asarray(g.integers(0, 3, n), dtype=backend.xp.int64), 3
    elif loss == "cross_entropy_probs":
        y, k = backend.asarray(g.normal(size=(n, 3))), 3
    elif loss in ("bce_logits", "bce"):
        y, k = backend.asarray(g.integers(0, 2, n).astype(float)), 1
    else:
        y, k = backend.asarray(g.normal(size=(n, 2))), 2
    w = backend.asarray(g.uniform(0.2, 2.0, n))
    return backend.asarray(X), y, w, k


def _exact(backend):
    """Whether a replay equals the eager tape bit for bit: on NumPy and torch's CPU (the
    same calls, some writing into kept buffers or aligned views of the flat gradient
    buffer) and on array_api_strict (the same calls, eagerly). JAX's compiled step rounds
    differently; on GPUs (unchecked here) to rounding."""
    return backend.name in ("numpy", "torch") or backend.name.startswith("array_api_strict")


def _eager_step(model, loss_fn, opt, X, y, w):
    opt.zero_grad()
    y = Tensor(y)
    loss = loss_fn(model(X), y) if w is None else loss_fn(model(X), y, Tensor(w))
    loss.backward()
    opt.step()
    return loss.data


def _with_l2(fn, model, alpha):
    """``fn`` plus the estimators' L2 term, ``alpha * sum ||W||^2`` over the weights."""
    weights = [m.weight for m in model if hasattr(m, "weight")]

    def with_l2(out, y, w=None):
        l2 = xpdl.autodiff.ops.sqnorm(weights[0])
        for W in weights[1:]:
            l2 = l2 + xpdl.autodiff.ops.sqnorm(W)
        return fn(out, y, w) + l2 * alpha

    return with_l2


def _compare(backend, act, loss, opt_name, dropout, weighted, steps=40, bs=32, l2=0.0):
    X, y, w, k = _batches(backend, loss)
    m1, m2 = (_net(backend, act, k, dropout) for _ in range(2))
    o1, o2 = OPTIMIZERS[opt_name](m1), OPTIMIZERS[opt_name](m2)
    fn = _loss(loss)
    if l2:
        fn1, fn2 = _with_l2(fn, m1, l2), _with_l2(fn, m2, l2)
    else:
        fn1 = fn2 = fn
    step = xpdl.compile_step(m1, fn1, o1)
    n = X.shape[0]
    exact = _exact(backend)
    tol = dict(rtol=1e-12 if backend.is64 else 1e-5, atol=1e-13 if backend.is64 else 1e-6)
    for i in range(steps):
        lo = (i % 3) * bs
        sl = slice(lo, min(lo + bs, n))
        Xb, yb = X[sl, ...], y[sl, ...]
        wb = w[sl] if weighted else None
        a = step(Xb, yb, wb)
        b = _eager_step(m2, fn2, o2, Xb, yb, wb)
        if exact:
            assert float(a) == float(b), (i, float(a), float(b))
        else:
            np.testing.assert_allclose(float(a), float(b), **tol)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        if exact:
            np.testing.assert_array_equal(backend.to_numpy(p1), backend.to_numpy(p2))
        else:
            np.testing.assert_allclose(backend.to_numpy(p1), backend.to_numpy(p2), **tol)
    for k_, v in o1.state_dict().items():
        v2 = o2.state_dict()[k_]
        if isinstance(v, (int, float, tuple)):
            assert v == v2
        elif exact:
            np.testing.assert_array_equal(backend.to_numpy(v), backend.to_numpy(v2))
    assert step.mode == "replay"
    return step


_LAYER_ACTS = [nn.ReLU, nn.Tanh, nn.Sigmoid, lambda: nn.LeakyReLU(0.1), nn.Identity]
_LOSSES = ["cross_entropy", "cross_entropy_probs", "mse", "mae", "huber", "bce_logits"]


@pytest.mark.parametrize("seed", range(8))
def test_random_networks_replay_like_the_tape(backend, seed):
    """Combinations the one-dimension tests above do not make: a random depth and width,
    a different activation per layer, dropout on some layers, one of every optimizer and
    loss, batches of changing size and a switch to eval mode and back (each records
    again). The replayed step follows the tape: bit for bit on NumPy."""
    r = np.random.default_rng(seed)
    loss = _LOSSES[seed % len(_LOSSES)]
    X, y, w, k = _batches(backend, loss, seed=seed)
    widths = [5, *r.integers(2, 9, size=int(r.integers(1, 4))), k]
    acts = r.integers(0, len(_LAYER_ACTS), size=len(widths))
    drops = r.choice([0.0, 0.0, 0.3], size=len(widths))
    opt_name = sorted(OPTIMIZERS)[seed % len(OPTIMIZERS)]

    def net():
        g = Generator(seed)
        kw = dict(rng=g, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
        layers = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(int(widths[i]), int(widths[i + 1]), **kw))
            if i < len(widths) - 2:
                layers.append(_LAYER_ACTS[acts[i]]())
                if drops[i]:
                    layers.append(nn.Dropout(float(drops[i]), rng=g))
        return nn.Sequential(*layers)

    m1, m2 = net(), net()
    o1, o2 = OPTIMIZERS[opt_name](m1), OPTIMIZERS[opt_name](m2)
    fn = _loss(loss)
    step = xpdl.compile_step(m1, fn, o1)
    exact = _exact(backend)
    tol = dict(rtol=1e-12 if backend.is64 else 1e-5, atol=1e-13 if backend.is64 else 1e-6)
    lo = 0
    for i, size in enumerate([16, 16, 7, 16, 7, 7, 16, 16, 16, 16, 3, 16, 16]):
        if i in (8, 10):
            for m in (m1, m2):
                m.eval() if i == 8 else m.train()
        sl = slice(lo, lo + size)
        lo = (lo + size) % 60
        wb = w[sl] if seed % 2 else None
        a = step(X[sl, ...], y[sl, ...], wb)
        b = _eager_step(m2, fn, o2, X[sl, ...], y[sl, ...], wb)
        if exact:
            assert float(a) == float(b), (i, float(a), float(b))
        else:
            np.testing.assert_allclose(float(a), float(b), **tol)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        if exact:
            np.testing.assert_array_equal(backend.to_numpy(p1), backend.to_numpy(p2))
        else:
            np.testing.assert_allclose(backend.to_numpy(p1), backend.to_numpy(p2), **tol)
    assert step.mode == "replay" and step.recordings >= 4


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_replay_equals_the_tape_for_every_optimizer(backend, opt_name):
    """40 steps (three batch shapes: 32, 32, 26) replayed against the eager tape: bit for bit
    on NumPy, to rounding elsewhere; parameters and optimizer state too."""
    step = _compare(backend, "relu", "cross_entropy", opt_name, 0.0, True)
    assert step.recordings <= 5  # two shapes, each recorded twice, plus at most one more


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_l2_gradient_folded_into_the_update_equals_the_tape(backend, opt_name):
    """An L2 term on the weights (the estimators' loss): where parameters are flat (NumPy,
    CuPy, torch) its gradient ``2 alpha W`` is added by the optimizer's own pass instead
    of by the program; still bit for bit the eager tape's step on NumPy."""
    step = _compare(backend, "relu", "cross_entropy", opt_name, 0.0, True, l2=0.05)
    fused = [plan[2] for kind, prog, *_ in step._programs.values() if kind == "ok"
             for plan in prog._flat_plans.values()]
    if backend.kind in ("numpy", "cupy", "torch"):
        assert fused and all(f is not None and len(f[1]) == 3 for f in fused)
        assert all(f[0] == pytest.approx(0.1) for f in fused)  # 2 alpha
    else:  # no flat layout: the program adds the gradients itself
        assert not fused


@pytest.mark.parametrize("traceable", [True, False], ids=["jnp.where", "python-if"])
@pytest.mark.parametrize("opt_name", ["adam", "rmsprop"])
def test_jax_steps_with_a_schedule_follow_the_tape(opt_name, traceable):
    """A learning-rate schedule on JAX: one written with ``jnp.where`` runs inside the
    jitted step, one that branches on the step in Python (which jax.jit cannot trace; it
    raised TracerBoolConversionError at the 19th step) runs the update eagerly after one
    warning. Both follow the eager tape through 40 steps, a reload of an earlier optimizer
    state (the checked step counts from it again: a schedule that turns negative at step
    30 is not reached) and the schedule's change at step 10."""
    from conftest import _make

    bk = _make("jax")  # (skips without JAX)
    jnp = bk.xp

    def lr(step):
        if isinstance(step, int) or not traceable:
            return 0.05 if step < 10 else (0.01 if step < 30 else -1.0)
        return jnp.where(step < 10, 0.05, jnp.where(step < 30, 0.01, -1.0))

    make = {"adam": lambda m: optim.Adam(m, lr=lr), "rmsprop": lambda m: optim.RMSprop(
        m, lr=lr, momentum=0.5)}[opt_name]
    X, y, w, k = _batches(bk, "cross_entropy")
    m1, m2 = _net(bk, "relu", k), _net(bk, "relu", k)
    o1, o2 = make(m1), make(m2)
    fn = _loss("cross_entropy")
    step = xpdl.compile_step(m1, fn, o1)
    saved = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(40):
            if i == 25:  # back to the state after 5 steps, on both
                o1.load_state_dict(saved)
                o2.load_state_dict(saved)
            Xb, yb = X[:32, ...], y[:32, ...]
            a = step(Xb, yb)
            b = _eager_step(m2, fn, o2, Xb, yb, None)
            np.testing.assert_allclose(float(a), float(b), rtol=1e-12, atol=1e-13)
            if i == 4:
                saved = o1.state_dict()
    msgs = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    if traceable:
        assert msgs == []
        (prog,) = [e[1] for e in step._programs.values() if e[0] == "ok"]
        assert prog._jitted[0] is o1.transform  # the update ran inside the compiled function
    else:
        assert len(msgs) == 1 and "cannot be traced by jax.jit" in msgs[0], msgs
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(bk.to_numpy(p1), bk.to_numpy(p2), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("opt_name", ["adam", "momentum", "rmsprop"])
def test_jax_runs_the_whole_step_as_one_jitted_function(opt_name):
    """On JAX forward, backward and the optimizer's update run as one
    jax.jit-compiled function: the same trajectory as the eager tape with the object
    optimizer's step(), step counters Python ints again when read (state_dict round-trips;
    between jitted steps they stay on the device, so no step waits for the last)."""
    from conftest import _make

    bk = _make("jax")
    X, y, w, k = _batches(bk, "cross_entropy")
    m1, m2 = _net(bk, "relu", k), _net(bk, "relu", k)
    o1, o2 = OPTIMIZERS[opt_name](m1), OPTIMIZERS[opt_name](m2)
    fn = _with_l2(_loss("cross_entropy"), m1, 0.01)
    step = xpdl.compile_step(m1, fn, o1)
    for _ in range(30):
        Xb, yb, wb = X[:32, ...], y[:32, ...], w[:32]
        a = step(Xb, yb, wb)
        b = _eager_step(m2, _with_l2(_loss("cross_entropy"), m2, 0.01), o2, Xb, yb, wb)
        np.testing.assert_allclose(float(a), float(b), rtol=1e-12, atol=1e-13)
    (prog,) = [e[1] for e in step._programs.values() if e[0] == "ok"]
    assert prog._jitted[0] is o1.transform  # the update ran inside the compiled function
    if hasattr(prog._jitted[1], "_cache_size"):  # compiled once, though the step counters
        assert prog._jitted[1]._cache_size() == 1  # went in as ints, then as device arrays
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(bk.to_numpy(p1), bk.to_numpy(p2), rtol=1e-12, atol=1e-13)
    counters = [key for key, v in o2.state.items() if isinstance(v, int)]
    assert counters and not any(isinstance(o1.state[key], int) for key in counters)
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert all(type(o1.state[key]) is int for key in counters)
    for key, v in s2.items():
        if isinstance(v, (int, float, tuple)):
            assert type(s1[key]) is type(v) and s1[key] == v
        else:
            np.testing.assert_allclose(bk.to_numpy(s1[key]), bk.to_numpy(v), rtol=1e-12,
                                       atol=1e-13)
    o2.load_state_dict(s1)
    # more jitted steps, then a plain step() on the same optimizer: it reads the counters
    for _ in range(3):
        step(X[:32, ...], y[:32, ...], w[:32])
        _eager_step(m2, _with_l2(_loss("cross_entropy"), m2, 0.01), o2, X[:32, ...],
                    y[:32, ...], w[:32])
    _eager_step(m1, fn, o1, X[32:64, ...], y[32:64, ...], w[32:64])
    _eager_step(m2, _with_l2(_loss("cross_entropy"), m2, 0.01), o2, X[32:64, ...],
                y[32:64, ...], w[32:64])
    assert all(type(o1.state[key]) is int and o1.state[key] == o2.state[key]
               for key in counters)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(bk.to_numpy(p1), bk.to_numpy(p2), rtol=1e-12, atol=1e-13)


def test_linear_gradients_are_written_into_the_flat_buffer(backend):
    """On NumPy, CuPy and torch the replayed linear VJPs write the weights' and biases'
    gradients straight into their views of the flat gradient buffer (``out=``): the arrays
    the program hands back are those views, holding the eager tape's gradients."""
    X, y, _, k = _batches(backend, "cross_entropy")
    m1, m2 = _net(backend, "relu", k), _net(backend, "relu", k)
    o1, o2 = optim.SGD(m1, lr=0.05), optim.SGD(m2, lr=0.05)
    step = xpdl.compile_step(m1, _loss("cross_entropy"), o1)
    for i in range(3):
        Xb, yb = X[i * 20:(i + 1) * 20, ...], y[i * 20:(i + 1) * 20, ...]
        step(Xb, yb)
        _eager_step(m2, _loss("cross_entropy"), o2, Xb, yb, None)
    Xb, yb = X[60:80, ...], y[60:80, ...]
    o2.zero_grad()
    _loss("cross_entropy")(m2(Xb), Tensor(yb)).backward()  # the tape's next gradients
    flat = step._flat
    if backend.kind not in ("numpy", "cupy", "torch"):
        assert flat is None  # the portable path: no flat layout, no out= writes
        return
    (prog,) = [e[1] for e in step._programs.values() if e[0] == "ok"]
    (plan,) = prog._flat_plans.values()
    params = list(m1.parameters())
    _, grads = prog.run((Xb, yb, None), [p.data for p in params], plan[0], plan[1])
    assert all(g is v for g, v in zip(grads, flat.gviews))
    tol = dict(rtol=1e-12 if backend.is64 else 1e-5, atol=1e-13 if backend.is64 else 1e-6)
    for g, p2 in zip(grads, m2.parameters()):
        np.testing.assert_allclose(backend.to_numpy(g), backend.to_numpy(p2.grad), **tol)


@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy_probs", "bce_logits", "bce",
                                  "mse", "mae", "huber"])
@pytest.mark.parametrize("weighted", [False, True])
def test_replay_equals_the_tape_for_every_loss(backend, loss, weighted):
    _compare(backend, "tanh", loss, "adam", 0.0, weighted, steps=12)


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_replay_equals_the_tape_for_every_activation_with_and_without_dropout(backend, act,
                                                                              dropout):
    """Dropout masks are drawn again on replay, in the recorded order, from the same
    generator: the same masks as the tape's."""
    _compare(backend, act, "mse", "sgd", dropout, False, steps=12)


def test_same_seed_same_numbers_on_every_backend(backend):
    """A replayed fit with dropout on any backend equals the NumPy one."""
    if not backend.is64:
        pytest.skip("compares float64 trajectories")

    def run(bk):
        X, y, w, k = _batches(bk, "cross_entropy")
        m = _net(bk, "relu", k, dropout=0.3)
        step = xpdl.compile_step(m, _loss("cross_entropy"), optim.Adam(m, lr=1e-2))
        losses = [float(step(X[i * 30:(i + 1) * 30, ...], y[i * 30:(i + 1) * 30, ...], None))
                  for i in range(3) for _ in range(4)]
        return losses, [bk.to_numpy(p) for p in m.parameters()]

    from conftest import _make

    ref_l, ref_p = run(_make("numpy"))
    got_l, got_p = run(backend)
    np.testing.assert_allclose(got_l, ref_l, rtol=1e-10)
    for a, b in zip(got_p, ref_p):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_dropout_draws_every_step_and_jax_runs_the_step_compiled(backend, monkeypatch):
    """Each step draws its mask once, on the host, in the tape's order (one draw per step,
    recordings included); on JAX the step with dropout runs as one compiled call (its
    forward is traced, not called per step) with the masks passed in, and equals the
    NumPy fit."""
    draws, forwards = [], []
    mask, fwd = F._dropout_mask, F._dropout.forward
    monkeypatch.setattr(F, "_dropout_mask", lambda *a: (draws.append(1), mask(*a))[1])
    monkeypatch.setattr(F._dropout, "forward", lambda *a: (forwards.append(1), fwd(*a))[1])
    X, y, w, k = _batches(backend, "cross_entropy")
    m = _net(backend, "relu", k, dropout=0.3)
    step = xpdl.compile_step(m, _loss("cross_entropy"), optim.Adam(m, lr=1e-2))
    # (a CUDA graph's launches call no forward in Python, its capture calls it twice: the
    # captured step with dropout is test_captured_graph_replay_equals_the_tape's)
    step.graphs = False
    losses = []
    for i in range(12):
        losses.append(float(step(X[:30, ...], y[:30, ...], None)))
        if i == 3:
            after4 = len(forwards)
    assert step.mode == "replay" and len(draws) == 12
    if backend.name == "jax":
        assert len(forwards) == after4 <= 4  # two recordings, traced once or twice
    else:
        assert len(forwards) == 12
    assert len(set(losses)) == len(losses)  # a new mask (and update) every step
    if backend.is64 and backend.name != "numpy":
        monkeypatch.undo()
        from conftest import _make

        nb = _make("numpy")
        Xn, yn, _, _ = _batches(nb, "cross_entropy")
        mn = _net(nb, "relu", k, dropout=0.3)
        sn = xpdl.compile_step(mn, _loss("cross_entropy"), optim.Adam(mn, lr=1e-2))
        ref = [float(sn(Xn[:30, ...], yn[:30, ...], None)) for _ in range(12)]
        np.testing.assert_allclose(losses, ref, rtol=1e-10)


def test_guards_record_again_on_shape_mode_and_requires_grad_changes(backend):
    X, y, w, k = _batches(backend, "mse")
    m = _net(backend, "relu", k, dropout=0.2)
    opt = optim.SGD(m, lr=0.01)
    step = xpdl.compile_step(m, _loss("mse"), opt)
    step(X[:30, ...], y[:30, ...])
    step(X[30:60, ...], y[30:60, ...])
    assert (step.mode, step.recordings) == ("replay", 2)
    step(X[60:90, ...], y[60:90, ...])
    assert step.recordings == 2  # replayed
    step(X[:20, ...], y[:20, ...])  # another batch shape
    assert step.recordings == 3
    m.eval()  # another mode (dropout off)
    step(X[:30, ...], y[:30, ...])
    assert step.recordings == 4
    m.train()
    first = m.parameters()[0]
    first.requires_grad = False  # frozen layer: no gradient, no update
    before = backend.to_numpy(first)
    step(X[:30, ...], y[:30, ...])
    step(X[30:60, ...], y[30:60, ...])
    step(X[60:90, ...], y[60:90, ...])
    assert step.recordings == 6
    np.testing.assert_array_equal(backend.to_numpy(first), before)


def _move(backend):
    """``(change, device)``: the move a model gets halfway through training, and the device
    of the batches after it. float64 -> float32 where the backend has float64, else (and
    also, on array_api_strict) to another device."""
    xp = backend.xp
    if backend.name.startswith("array_api_strict"):
        to = xp.Device("CPU_DEVICE")
        if backend.has_float64:
            return (lambda m: m.to(device=to, dtype=xp.float32)), to
        return (lambda m: m.to(device=to)), to
    if not backend.has_float64:
        pytest.skip("nothing to change: one float dtype, one device")
    return (lambda m: m.to(dtype=xp.float32)), backend.device


@pytest.mark.parametrize("opt_name", ["adam", "momentum"])
def test_guards_record_again_on_dtype_and_device_changes(backend, opt_name):
    """A model moved to another dtype or device between steps (``Module.to``) gets a new
    recording; losses, parameters and optimizer state follow the eager tape through the
    move (bit for bit on NumPy)."""
    X, y, w, k = _batches(backend, "cross_entropy")
    m1, m2 = _net(backend, k=k), _net(backend, k=k)
    o1, o2 = OPTIMIZERS[opt_name](m1), OPTIMIZERS[opt_name](m2)
    fn = _loss("cross_entropy")
    step = xpdl.compile_step(m1, fn, o1)
    change, dev = _move(backend)
    exact = _exact(backend)
    for i in range(10):
        if i == 5:
            change(m1)
            change(m2)
            assert step.recordings == 2
        sl = slice((i % 3) * 30, (i % 3) * 30 + 30)
        Xb, yb = X[sl, ...], y[sl, ...]
        if i >= 5:
            Xb = backend.xp.asarray(backend.xp.astype(Xb, m1.parameters()[0].dtype), device=dev)
            yb = backend.xp.asarray(yb, device=dev)
        a, b = step(Xb, yb), _eager_step(m2, fn, o2, Xb, yb, None)
        assert a.dtype == b.dtype == m1.parameters()[0].dtype
        if exact:
            assert float(a) == float(b), i
        else:
            np.testing.assert_allclose(float(a), float(b), rtol=1e-5, atol=1e-6)
    assert step.recordings == 4 and step.mode == "replay"
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert p1.dtype == p2.dtype and _ns_device(p1.data) == _ns_device(p2.data)
        assert _ns_device(p1.data) == dev
        if exact:
            np.testing.assert_array_equal(backend.to_numpy(p1), backend.to_numpy(p2))
        else:
            np.testing.assert_allclose(backend.to_numpy(p1), backend.to_numpy(p2),
                                       rtol=1e-5, atol=1e-6)


def _ns_device(a):
    from xpdl import _namespace as ns

    return ns.device_of(a)


def test_a_step_computing_outside_xpdl_stays_eager_with_a_warning(backend):
    """A loss that casts ``y.data`` with ``xp`` directly would freeze the first batch's
    targets into the program: the second recording sees other constants, so the step keeps
    running on the tape, and its numbers stay right."""
    X, y, w, k = _batches(backend, "mse")
    xp = backend.xp
    m1, m2 = _net(backend, "relu", k), _net(backend, "relu", k)
    o1, o2 = optim.SGD(m1, lr=0.05), optim.SGD(m2, lr=0.05)

    def sneaky(out, t):
        return L.mse(out, xp.asarray(t.data * 1.0))

    step = xpdl.compile_step(m1, sneaky, o1)
    with pytest.warns(RuntimeWarning, match="runs eagerly"):
        for i in range(3):
            Xb, yb = X[i * 30:(i + 1) * 30, ...], y[i * 30:(i + 1) * 30, ...]
            a = step(Xb, yb)
            b = _eager_step(m2, sneaky, o2, Xb, yb, None)
            np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    assert step.mode.startswith("eager (")


@pytest.mark.parametrize("seed_kind", ["int", "generator"])
def test_functional_dropout_replays_like_the_tape(backend, seed_kind):
    """F.dropout(h, p, rng=0) draws the same mask on every call (an int seeds a new
    generator each time); the recording kept the generator it made, so a replay drew new
    masks and its losses left the tape's from the third step. A Generator's draws
    continue on both."""
    X, y, w, k = _batches(backend, "mse")
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)

    def make():
        lin = nn.Linear(5, k, rng=0, **kw)
        rng = 0 if seed_kind == "int" else Generator(3)
        return lin, (lambda a: F.dropout(lin(a), 0.5, rng=rng))

    (l1, m1), (l2, m2) = make(), make()
    o1, o2 = optim.SGD([l1.weight, l1.bias], lr=0.1), optim.SGD([l2.weight, l2.bias], lr=0.1)
    step = xpdl.compile_step(m1, lambda out, t: L.mse(out, t), o1)
    tol = dict(rtol=1e-12 if backend.is64 else 1e-5)
    for i in range(6):
        Xb, yb = X[i * 10:(i + 1) * 10, ...], y[i * 10:(i + 1) * 10, ...]
        a = step(Xb, yb)
        b = _eager_step(m2, lambda out, t: L.mse(out, t), o2, Xb, yb, None)
        np.testing.assert_allclose(float(a), float(b), **tol)
    assert step.mode == "replay"
    np.testing.assert_allclose(backend.to_numpy(l1.weight), backend.to_numpy(l2.weight), **tol)


def test_gradients_of_tensors_the_optimizer_does_not_own(backend):
    """A layer that requires grad but is not given to the optimizer gets a gradient from
    the tape every step (accumulating, as in PyTorch); a replay writes only the
    optimizer's parameters. Such a step used to give up at its second recording with a
    message about values computed outside xpdl; it stays eager from the first, naming
    the Tensor and the two fixes, its numbers and the outside gradient the tape's. Frozen
    (requires_grad=False), the same model replays."""
    X, y, w, k = _batches(backend, "cross_entropy")
    m1, m2 = _net(backend, "relu", k), _net(backend, "relu", k)
    own = [m1[0].weight, m1[0].bias, m1[2].weight, m1[2].bias]  # not the last layer
    o1 = optim.SGD(own, lr=0.05)
    o2 = optim.SGD([m2[0].weight, m2[0].bias, m2[2].weight, m2[2].bias], lr=0.05)
    step = xpdl.compile_step(m1, lambda out, t: L.cross_entropy(out, t), o1)
    with pytest.warns(RuntimeWarning, match=r"not one of the optimizer's parameters.*"
                                            r"requires_grad = False"):
        for i in range(4):
            Xb, yb = X[i * 20:(i + 1) * 20, ...], y[i * 20:(i + 1) * 20, ...]
            a = step(Xb, yb)
            b = _eager_step(m2, lambda out, t: L.cross_entropy(out, t), o2, Xb, yb, None)
            np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    assert step.mode.startswith("eager (") and step.recordings == 1
    np.testing.assert_allclose(backend.to_numpy(m1[4].weight.grad),
                               backend.to_numpy(m2[4].weight.grad), rtol=1e-6)
    for p in (m1[4].weight, m1[4].bias):
        p.requires_grad = False
    frozen = xpdl.compile_step(m1, lambda out, t: L.cross_entropy(out, t), o1)
    for _ in range(3):
        frozen(X[:20, ...], y[:20, ...])
    assert frozen.mode == "replay"


@pytest.mark.parametrize("how", ["float", "bool", "item"])
def test_a_branch_on_a_tensor_value_keeps_the_step_eager(backend, how):
    """A loss that branches on a Tensor's value: the first two batches take one branch, a
    later one the other. Two agreeing recordings used to verify the program, which then
    replayed the recorded branch for the later batches too (the parameters drifted off the
    tape's); turning a Tensor into a Python value now keeps the step eager from the first
    call, with the tape's numbers."""
    X, y, w, k = _batches(backend, "mse")
    m1, m2 = _net(backend, "relu", k), _net(backend, "relu", k)
    o1, o2 = optim.SGD(m1, lr=0.05), optim.SGD(m2, lr=0.05)

    def branchy(out, t):
        s = xpdl.functional.mean(t)
        up = {"float": lambda: float(s) > 0, "bool": lambda: bool(s > 0),
              "item": lambda: s.item() > 0}[how]()
        loss = L.mse(out, t)
        return loss * 2.0 if up else loss * 0.5

    step = xpdl.compile_step(m1, branchy, o1)
    with pytest.warns(RuntimeWarning, match=rf"Python value \({how}"):
        for i, shift in enumerate([5.0, 5.0, -5.0, 5.0, -5.0, -5.0]):
            sl = slice((i % 3) * 30, (i % 3) * 30 + 30)
            yb = y[sl, ...] + shift
            a = step(X[sl, ...], yb)
            b = _eager_step(m2, branchy, o2, X[sl, ...], yb, None)
            np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    assert step.mode.startswith("eager (it turns a Tensor into a Python value")
    tol = 1e-12 if backend.is64 else 1e-5
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(backend.to_numpy(p1), backend.to_numpy(p2), rtol=tol,
                                   atol=tol)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "cross_entropy_probs", "bce_logits"])
def test_full_batch_steps_replay_after_two_calls(loss):
    """The same batch every call (full-batch training): nothing input-dependent is frozen
    (only scalars and the backward seed are constants), so the second call verifies."""
    from conftest import _make

    bk = _make("numpy")
    X, y, w, k = _batches(bk, loss)
    m = _net(bk, "relu", k)
    step = xpdl.compile_step(m, _loss(loss), optim.Adam(m, lr=1e-2))
    for _ in range(5):
        step(X, y, w)
    assert step.mode == "replay" and step.recordings == 2


def test_replay_follows_parameters_and_state_replaced_between_steps(backend):
    """Between replays a user may replace a parameter's array, reload the optimizer's
    state, take a plain ``step()`` or give the optimizer a new transform (another learning
    rate, the same state): the next replay works on the new arrays and transform (the flat
    layout is made again), giving the eager tape's numbers."""
    X, y, w, k = _batches(backend, "cross_entropy")
    m1, m2 = _net(backend, "relu", k), _net(backend, "relu", k)
    o1, o2 = optim.Adam(m1, lr=1e-2), optim.Adam(m2, lr=1e-2)
    fn = _loss("cross_entropy")
    step = xpdl.compile_step(m1, fn, o1)
    exact = _exact(backend)
    tol = dict(rtol=1e-12 if backend.is64 else 1e-5, atol=1e-13 if backend.is64 else 1e-6)

    def both(i):
        sl = slice((i % 3) * 30, (i % 3) * 30 + 30)
        a = step(X[sl, ...], y[sl])
        b = _eager_step(m2, fn, o2, X[sl, ...], y[sl], None)
        if exact:
            assert float(a) == float(b), i
        else:
            np.testing.assert_allclose(float(a), float(b), **tol)

    def disturb(kind):
        for m, o in ((m1, o1), (m2, o2)):
            if kind == "data":  # a new array for the first weight
                m[0].weight.data = m[0].weight.data * 0.5
            elif kind == "state":  # reloaded optimizer state: new arrays
                o.load_state_dict(o.state_dict())
            elif kind == "transform":  # a new learning rate; the state carries on
                o.transform = optim.adam(0.05)
            else:  # a plain step on the tape between replays
                _eager_step(m, fn, o, X[:20, ...], y[:20], None)

    i = 0
    for kind in ("data", "state", "step", "transform", "data"):
        for _ in range(5):
            both(i)
            i += 1
        disturb(kind)
    for _ in range(5):
        both(i)
        i += 1
    assert step.mode == "replay"
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        if exact:
            np.testing.assert_array_equal(backend.to_numpy(p1), backend.to_numpy(p2))
        else:
            np.testing.assert_allclose(backend.to_numpy(p1), backend.to_numpy(p2), **tol)


def test_compile_step_checks_its_arguments(backend):
    X, y, w, k = _batches(backend, "mse")
    m = _net(backend, "relu", k)
    with pytest.raises(TypeError, match="optimizer"):
        xpdl.compile_step(m, L.mse, object())
    step = xpdl.compile_step(m, L.mse, optim.SGD(m, lr=0.1))
    if backend.name != "numpy":
        with pytest.raises(TypeError, match="numpy"):
            step(np.zeros((3, 5)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="one-element"):
        xpdl.compile_step(m, lambda o, t: o, optim.SGD(m, lr=0.1))(X, y)
    # lists raised AttributeError ('list' object has no attribute 'shape') from the guard
    Xl, yl = backend.to_numpy(X).tolist(), backend.to_numpy(y).tolist()
    before = [backend.to_numpy(p).copy() for p in m.parameters()]
    for args, name in (((Xl, y), "X"), ((X, yl), "y"), ((X, y, [1.0] * X.shape[0]),
                                                        "sample_weight")):
        with pytest.raises(TypeError, match=f"compile_step: {name} must be an array"):
            step(*args)
    for p, b in zip(m.parameters(), before):
        np.testing.assert_array_equal(backend.to_numpy(p), b)


def test_nn_model_through_compile_step_is_the_estimator(backend):
    """An nn.Sequential trained with optim.Adam through compile_step, batches taken as the
    estimator takes them, gives the MLPClassifier's fit bit for bit on NumPy: one engine."""
    g = np.random.default_rng(3)
    Xh = g.normal(size=(100, 4))
    yh = (Xh[:, 0] + Xh[:, 1] > 0).astype(np.int64) + (Xh[:, 2] > 0.5)
    X, y = backend.asarray(Xh), backend.asarray(yh, dtype=backend.xp.int64)
    est = MLPClassifier((9,), batch_size=25, max_iter=3, alpha=1e-3, learning_rate=1e-2,
                        random_state=7, n_iter_no_change=10**6).fit(X, y)
    gen = Generator(7)
    kw = dict(rng=gen, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    model = nn.Sequential(nn.Linear(4, 9, init="he", **kw), nn.ReLU(),
                          nn.Linear(9, 3, init="glorot", **kw))
    opt = optim.Adam(model, lr=1e-2)

    def loss_fn(out, t):
        l2 = sum((xpdl.autodiff.ops.sqnorm(mod.weight) for mod in (model[0], model[2])),
                 start=0.0)
        return L.cross_entropy(out, t) + l2 * (0.5 * 1e-3 / out.shape[0])

    step = xpdl.compile_step(model, loss_fn, opt)
    for _ in range(3):
        perm = gen.permutation(100, xp=backend.xp, device=backend.device)
        for s in range(0, 100, 25):
            idx = perm[s:s + 25]
            step(backend.xp.take(X, idx, axis=0), backend.xp.take(y, idx, axis=0))
    exact = _exact(backend)
    for a, b in zip([model[0].weight, model[2].weight], est.coefs_):
        a, b = backend.to_numpy(a).T, backend.to_numpy(b)
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9 if backend.is64 else 1e-4, atol=1e-6)


@pytest.mark.parametrize("Est,activation,optimizer", [
    (MLPClassifier, "relu", "adam"), (MLPClassifier, "tanh", "sgd"),
    (MLPRegressor, "sigmoid", "adamw"), (MLPRegressor, "relu", "rmsprop")])
def test_estimator_fit_replayed_equals_the_tape(backend, Est, activation, optimizer):
    """Whole fits, replayed program against the tape at every step
    (``_compiled_training = False``): bit for bit on NumPy, to rounding elsewhere."""
    g = np.random.default_rng(1)
    X = g.normal(size=(90, 5))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 0.5)
    if Est is MLPRegressor:
        y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    Xb = backend.asarray(X)
    yb = backend.asarray(y, dtype=backend.xp.int64) if y.dtype.kind == "i" else backend.asarray(y)
    wb = backend.asarray(g.uniform(0.5, 1.5, 90))
    kw = dict(hidden_layer_sizes=(16, 8), activation=activation, optimizer=optimizer,
              batch_size=32, max_iter=6, alpha=1e-2, learning_rate=1e-2, random_state=0,
              n_iter_no_change=10**6)
    fast = Est(**kw).fit(Xb, yb, sample_weight=wb)
    assert fast._step_cache[3].mode == "replay"
    tape = Est(**kw)
    tape._compiled_training = False
    tape.fit(Xb, yb, sample_weight=wb)
    if backend.name == "numpy":
        assert fast.loss_curve_ == tape.loss_curve_
        for a, b in zip(fast.coefs_ + fast.intercepts_, tape.coefs_ + tape.intercepts_):
            np.testing.assert_array_equal(a, b)
        return
    rtol = 1e-10 if backend.is64 else 2e-4
    np.testing.assert_allclose(fast.loss_curve_, tape.loss_curve_, rtol=rtol)
    for a, b in zip(fast.coefs_ + fast.intercepts_, tape.coefs_ + tape.intercepts_):
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=rtol,
                                   atol=1e-12 if backend.is64 else 1e-5)


# -- the tape frees its graph ------------------------------------------------------------
def test_backward_frees_the_graph_unless_retained(backend):
    X, y, w, k = _batches(backend, "mse")
    m = _net(backend, "tanh", k)
    loss = L.mse(m(X), y)
    loss.backward(retain_graph=True)
    g1 = [backend.to_numpy(p.grad) for p in m.parameters()]
    loss.backward()  # allowed once more; the gradients add up
    for p, g in zip(m.parameters(), g1):
        np.testing.assert_allclose(backend.to_numpy(p.grad), 2 * g, rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


@pytest.mark.parametrize("update", ["step", "compiled_step", "load_state_dict", "to"])
def test_backward_after_the_parameters_changed_is_refused(backend, update):
    """A graph kept with retain_graph=True whose parameters an optimizer step (or a load,
    or a move) changed afterwards gave gradients computed from the new values (the VJPs
    read the parents' data at backward time; in one example the first layer's weight
    gradient came out 5.7x the right one) without a word; it raises now, as PyTorch's
    version counters make it. A model the update did not touch, and a fresh forward, are
    unaffected."""
    X, y, w, k = _batches(backend, "mse")
    m, other = _net(backend, "tanh", k), _net(backend, "tanh", k, seed=1)
    opt = optim.SGD(m, lr=0.1)
    loss, loss_other = L.mse(m(X), y), L.mse(other(X), y)
    loss.backward(retain_graph=True)
    if update == "step":
        opt.step()
    elif update == "compiled_step":
        step = xpdl.compile_step(m, lambda out, t: L.mse(out, t), opt)
        for _ in range(3):  # recorded twice, then replayed
            step(X, y)
    elif update == "load_state_dict":
        m.load_state_dict(m.state_dict())
    else:
        m.to(xp=backend.xp, device=backend.device)
    with pytest.raises(RuntimeError, match="updated after the forward pass"):
        loss.backward()
    loss_other.backward()  # its parameters were not touched
    opt.zero_grad()
    L.mse(m(X), y).backward()  # the forward again: the gradients of the new values
    g = backend.to_numpy(m[0].weight.grad)
    ref = xpdl.grad(lambda W: L.mse(F.linear(F.tanh(F.linear(F.tanh(F.linear(
        X, W, m[0].bias)), m[2].weight, m[2].bias)), m[4].weight, m[4].bias), y))(
        m[0].weight.data)
    np.testing.assert_allclose(g, backend.to_numpy(ref), rtol=1e-6, atol=1e-9)


def test_kept_losses_keep_no_activations(backend):
    """Like PyTorch without retain_graph: after backward, a loss tensor kept for logging
    does not keep the step's activations alive."""
    X, y, w, k = _batches(backend, "mse")
    m = _net(backend, "relu", k)
    kept, refs = [], []
    for _ in range(3):
        hidden = m[1](m[0](X))
        refs.append(weakref.ref(hidden))
        loss = L.mse(m[4](m[3](m[2](hidden))), y)
        del hidden
        loss.backward()
        kept.append(loss)
    gc.collect()
    assert all(r() is None for r in refs)
    assert all(np.isfinite(float(x.data)) for x in kept)


def test_replay_frees_each_value_after_its_last_use(backend):
    """The replay (generated straight-line code) holds each intermediate array only until
    its last reader has run, as the tape does: at every call, the values whose readers
    have all run are gone (weak references), the others still there."""
    X, y, w, k = _batches(backend, "cross_entropy")
    m = _net(backend, "relu", k)
    step = xpdl.compile_step(m, _loss("cross_entropy"), optim.SGD(m, lr=0.05))
    for i in range(3):
        step(X[i * 30:(i + 1) * 30, ...], y[i * 30:(i + 1) * 30])
    assert step.mode == "replay"
    prog = next(e[1] for e in step._programs.values() if e[0] == "ok")
    keep = {s for s, _ in prog.run_consts} | set(prog.input_slots) | set(prog.param_slots)
    keep |= set(prog.grad_slots) | {prog.loss_slot}
    last = {}
    for i, st in enumerate(prog.steps):
        for a in st[1]:
            last[a] = i
    refs = {}  # slot -> weak reference to the array the replay made for it
    checked = []

    def watch(i, fn, outs, multi):
        def call(*args):
            gc.collect(0)  # (arrays go by reference count; a full collection took 24 s here)
            for s, r in refs.items():
                if s not in keep:  # gone once every reader before this call has run
                    assert (r() is None) == (last.get(s, -1) < i), (i, s)
                    checked.append(s)
            res = fn(*args)
            for s, v in zip(outs, res if multi else (res,)):
                if s is not None and s not in keep:
                    try:
                        refs[s] = weakref.ref(v)
                    except TypeError:  # saved tuples, NumPy scalars: not followed
                        pass
            return res
        return call

    steps = [(watch(i, fn, outs, multi), args, outs, multi, free)
             for i, (fn, args, outs, multi, free) in enumerate(prog.steps)]
    loss, grads = prog.run((X[:30, ...], y[:30], None), [p.data for p in m.parameters()],
                           steps, prog.grad_slots)
    ref_loss, _ = prog.run((X[:30, ...], y[:30], None), [p.data for p in m.parameters()])
    assert float(loss) == float(ref_loss)
    if not refs:
        pytest.skip(f"{backend.name} arrays take no weak references")
    assert any(r() is None for r in refs.values()) and len(checked) > len(prog.steps)


def test_generated_replays_leave_nothing_behind(backend):
    """Each plan's generated replay registers its source for tracebacks; dropping the
    step drops it (a hyperparameter search makes thousands of steps in one process)."""
    import linecache

    def ours():
        return sum(k.startswith("<xpdl replay") for k in linecache.cache)

    gc.collect()
    before = ours()
    X, y, w, k = _batches(backend, "mse")
    for seed in range(3):
        m = _net(backend, "tanh", k, seed=seed)
        step = xpdl.compile_step(m, _loss("mse"), optim.Adam(m, lr=1e-2))
        for i in range(4):
            step(X[i * 20:(i + 1) * 20, ...], y[i * 20:(i + 1) * 20, ...])
        assert step.mode == "replay" and ours() > before
    del step, m
    gc.collect()
    assert ours() == before


def test_the_untouched_autodiff_api_still_works_after_freeing():
    """grad/value_and_grad/check_grad build a fresh graph per call."""
    x = np.array([0.3, -1.2, 2.0])
    f = xpdl.grad(lambda t: (F.tanh(t) * t).sum())
    np.testing.assert_allclose(f(x), f(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xpdl.check_grad(lambda t: (F.softplus(t) ** 2).sum(), x) < 1e-6


def test_constant_chains_fold_at_planning(backend):
    """The scaling of the seed gradient by constants (the add and mul VJPs of the L2 term,
    the mean's VJP over the batch) is computed once at planning: fewer calls replayed than
    recorded, the folded ones all VJPs that read only constants, and the replay still
    equals the tape (tests above)."""
    from collections import Counter

    X, y, w, k = _batches(backend, "cross_entropy")
    m = _net(backend, "relu", k)
    step = xpdl.compile_step(m, _with_l2(_loss("cross_entropy"), m, 0.05),
                             optim.SGD(m, lr=0.05))
    for _ in range(3):
        step(X[:32, ...], y[:32, ...])
    assert step.mode == "replay"
    prog = next(p for kind, p, *_ in step._programs.values() if kind == "ok")
    folded = Counter(prog.signature) - Counter(node[4] for node in prog.nodes)
    assert sum(folded.values()) >= 3
    assert {sig[:2] for sig in folded} <= {("b", "add"), ("b", "mul"), ("b", "mean")}
    assert ("b", "mul") in {sig[:2] for sig in folded}
    assert len(prog.run_consts) - len(prog.consts) >= sum(folded.values())


# -- captured graphs (CUDA graphs: torch on CUDA, CuPy), NumPy/torch standing in ----------
class _RerunGraphs:
    """Stands in for CUDA graphs: capture runs the body once; a launch runs it again and
    writes the loss and gradients into the arrays the capture returned (a real graph
    writes the same fixed buffers). ``mode`` breaks it on purpose."""

    def __init__(self, mode="ok"):
        self.mode, self.captures, self.launches = mode, 0, 0
        self.collector_on = []  # whether Python's cyclic collector could run, per capture

    def capture(self, fn):
        if self.mode == "raise":
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1
        self.collector_on.append(gc.isenabled())
        out = fn()
        return (fn, out), out

    def launch(self, graph):
        self.launches += 1
        if self.mode == "stale":  # a graph that does not recompute
            return
        fn, out = graph
        new_loss, new_grads, _ = fn()
        out[0] = new_loss  # (NumPy's 0-d results are scalars: replaced, not written)
        for a, b in zip(out[1], new_grads):
            if a is not None and a is not b:
                a[...] = b


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("mode", ["ok", "raise", "stale"])
def test_captured_graph_replay_equals_the_tape(backend, monkeypatch, mode, dropout):
    """After a few plain replays the step is captured once and launched from then on:
    the batch (and dropout's masks, drawn on the host in the tape's order) copied into
    static inputs, results read from the capture's buffers. Still the tape's numbers
    (bit for bit on NumPy), returned losses are not overwritten by the next launch, and a
    capture that fails or disagrees with a plain replay falls back to plain replays with
    a warning. Namespaces without a flat layout never capture."""
    from xpdl.autodiff import program

    real = _real_graphs(backend)
    if real and mode != "ok":
        pytest.skip("breaking a capture on purpose is for the stand-in")
    graphs = program._GRAPHS[backend.kind] if real else _RerunGraphs(mode)
    monkeypatch.setitem(program._GRAPHS, backend.kind, graphs)
    monkeypatch.setattr(program, "_GRAPH_AFTER", 2)
    capturing = _captures(backend, graphs)
    with warnings.catch_warnings():
        if mode == "ok":  # a capture that works says nothing; one that cannot, neither
            warnings.simplefilter("error", RuntimeWarning)
        if mode != "ok" and capturing:
            with pytest.warns(RuntimeWarning, match="without a captured graph"):
                step = _compare(backend, "relu", "cross_entropy", "adam", dropout, True,
                                l2=0.05)
        else:
            step = _compare(backend, "relu", "cross_entropy", "adam", dropout, True, l2=0.05)
    progs = [e[1] for e in step._programs.values() if e[0] == "ok"]
    captured = [p.__dict__.get("_captured") for p in progs]
    if not capturing:
        assert all(c is None for c in captured)
        assert real or graphs.captures == graphs.launches == 0
    elif mode == "ok":
        assert all(isinstance(c, program._Captured) for c in captured)
        assert real or graphs.launches > 20
        # once checked, the capture is launched straight from the replay's fast path
        assert all(p.__dict__["_fast"][4] is c for p, c in zip(progs, captured))
    else:
        assert all(c is False for c in captured)


def _real_graphs(backend):
    """Whether the backend has real CUDA graphs here (CuPy; torch on CUDA)."""
    return backend.kind == "cupy" or backend.name == "torch:cuda"


def _captures(backend, graphs):
    """Whether replays on ``backend`` are captured by ``graphs``: namespaces with a flat
    layout where the graph backend is usable (CuPy's is not while CuPy refuses cuBLAS
    calls in a capture; torch's only on CUDA)."""
    usable = getattr(graphs, "usable", None)
    return backend.kind in ("numpy", "torch", "cupy") and (
        usable is None or usable(backend.asarray(np.zeros(2))))


def test_torch_captures_graphs_on_cuda_only(backend):
    """torch's replays are captured as CUDA graphs on CUDA tensors; on the CPU they replay
    plainly (the flat layout's fast path)."""
    from xpdl.autodiff import program

    if backend.kind != "torch":
        pytest.skip("torch's CUDA graphs")
    like = backend.asarray(np.zeros(2))
    got = program._graph_backend(backend.xp, like)
    assert (got is program._GRAPHS["torch"]) == (backend.name == "torch:cuda")
    assert (got is None) == (backend.name == "torch")


def test_captured_graph_losses_are_copies_with_and_without_dropout(backend, monkeypatch):
    from xpdl.autodiff import program

    real = _real_graphs(backend)
    if not real:
        monkeypatch.setitem(program._GRAPHS, backend.kind, _RerunGraphs())
    capturing = _captures(backend, program._GRAPHS.get(backend.kind))
    monkeypatch.setattr(program, "_GRAPH_AFTER", 1)
    X, y, w, k = _batches(backend, "mse")
    for dropout in (0.0, 0.3):
        m = _net(backend, "tanh", k, dropout)
        step = xpdl.compile_step(m, L.mse, optim.SGD(m, lr=0.01))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            kept = [step(X[:30, ...], y[:30, ...]) for _ in range(8)]
        values = [float(v) for v in kept]
        assert len(set(values)) == len(values)  # each step's loss, not the last one's
        prog = next(e[1] for e in step._programs.values() if e[0] == "ok")
        captured = prog.__dict__.get("_captured")
        if not capturing:
            assert captured is None
        else:
            assert isinstance(captured, program._Captured)


def test_capture_runs_with_the_cyclic_collector_held(backend, monkeypatch):
    """A capture starts after a full collection, with Python's cyclic collector off until
    it ends (a collection inside would finalize another object's CUDA stream or graph,
    which ends the capture), and the collector is back on afterwards; one that was off
    stays off."""
    from xpdl.autodiff import program

    if backend.kind not in ("numpy", "torch"):
        pytest.skip("namespaces without a flat layout do not capture")
    X, y, w, k = _batches(backend, "mse")
    for enabled in (True, False):
        graphs = _RerunGraphs()
        monkeypatch.setitem(program._GRAPHS, backend.kind, graphs)
        monkeypatch.setattr(program, "_GRAPH_AFTER", 1)
        m = _net(backend, "tanh", k)
        step = xpdl.compile_step(m, L.mse, optim.SGD(m, lr=0.01))
        freed = []

        class Cycle:
            def __del__(self):
                freed.append(gc.isenabled())

        (enabled and gc.enable) or gc.disable()
        try:
            for i in range(5):
                if i == 2:  # garbage only the cyclic collector frees, before the capture
                    c = Cycle()
                    c.me = c
                    del c
                step(X[:30, ...], y[:30, ...])
            assert gc.isenabled() == enabled
        finally:
            gc.enable()
        assert graphs.captures == 1 and graphs.collector_on == [False]
        assert len(freed) == 1


def test_a_batch_from_another_namespace_is_refused_after_replay(backend):
    """Once the step replays, a batch of another array type still gets the TypeError
    naming both namespaces (the guard key holds the inputs' array types), and the
    parameters and optimizer state are untouched."""
    import array_api_strict as xps

    X, y, _, k = _batches(backend, "mse")
    model = _net(backend, k=k)
    opt = optim.Adam(model, lr=1e-2)
    step = xpdl.compile_step(model, _loss("mse"), opt)
    for i in range(4):
        step(X[i * 20:(i + 1) * 20, ...], y[i * 20:(i + 1) * 20, ...])
    assert step.mode == "replay"
    before = [backend.to_numpy(p).copy() for p in model.parameters()]
    state = {k_: (backend.to_numpy(v).copy() if not isinstance(v, (int, float, tuple)) else v)
             for k_, v in opt.state_dict().items()}
    Xh, yh = backend.to_numpy(X[:20, ...]), backend.to_numpy(y[:20, ...])
    if backend.name == "numpy":
        other, name = (xps.asarray(Xh), xps.asarray(yh)), "array_api_strict"
    else:
        other, name = (Xh, yh), "numpy"
    with warnings.catch_warnings():
        # and cleanly: no comparison of one library's dtypes with another's on the way
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=f"the batch is a {name} array"):
            step(*other)
        with pytest.raises(TypeError, match="the batch is a"):
            step(X[:20, ...], other[1])  # one input from elsewhere is enough
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, backend.to_numpy(b))
    for k_, v in opt.state_dict().items():
        if isinstance(v, (int, float, tuple)):
            assert v == state[k_]
        else:
            np.testing.assert_array_equal(state[k_], backend.to_numpy(v))
    assert float(step(X[:20, ...], y[:20, ...])) >= 0  # and it still trains


def test_whole_fits_match_the_release_before_the_engine():
    # #15.3: a whole fit's probabilities (float64) against the last commit before the
    # engine (the hand-written fused step an independent implementation), within 1e-8;
    # the tool checks it out into a temporary worktree and fits in both trees
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tool = root / "tools" / "compare_release.py"
    if shutil.which("git") is None or subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "-q", "3e5d517~1^{commit}"],
            capture_output=True).returncode != 0:
        pytest.skip("needs the git history (the commit before the engine)")
    res = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True,
                         timeout=600)
    if res.returncode == 2:
        pytest.skip(f"the release before the engine does not run here: {res.stdout[-300:]}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "largest difference" in res.stdout
    assert res.stdout.count("\n") >= 10  # a line for each of the eight fits


def test_replayed_steps_check_labels_and_a_detached_loss(backend):
    # After the first (eager) step the replay never looked at the labels again: classes
    # out of range gave a loss of 0.0 (one-hot rows of zeros) and a silent update. Now the
    # primitive's check runs before each replay on host memory: the same ValueError as
    # the first step, and nothing is updated.
    if backend.name.startswith("array_api_strict"):  # its extra devices stand in for GPUs
        import array_api_strict  # (their replays read no values); its host device checks

        backend = type(backend)("strict:CPU_DEVICE", array_api_strict,
                                array_api_strict.Device("CPU_DEVICE"))
    net = _net(backend)
    opt = optim.Adam(net, lr=1e-2)
    step = xpdl.compile_step(net, L.cross_entropy, opt)
    X, y, _, _ = _batches(backend, "cross_entropy")
    if not _ns.values_on_host(backend.xp, [y]):
        # CuPy, torch on CUDA: a replay reads no values (a check would wait for the GPU
        # every step; documented); the tape's steps check, before anything is updated
        before = [backend.to_numpy(p.data).copy() for p in net.parameters()]
        with pytest.raises(ValueError, match=r"class indices must be in \[0, 3\)"):
            step(X, y + 3)
        for p, b in zip(net.parameters(), before):
            np.testing.assert_array_equal(backend.to_numpy(p.data), b)
        return
    for _ in range(20):  # (on JAX its jitted step once checked nothing after 16 replays)
        step(X, y)
    assert step.mode == "replay"
    before = [backend.to_numpy(p.data).copy() for p in net.parameters()]
    for bad in (y + 3, y - 3):
        with pytest.raises(ValueError, match=r"class indices must be in \[0, 3\)"):
            step(X, bad)
    for p, b in zip(net.parameters(), before):
        np.testing.assert_array_equal(backend.to_numpy(p.data), b)
    # BCE's probabilities and targets outside [0, 1], the same way
    bnet = _net(backend, k=1)
    bstep = xpdl.compile_step(bnet, _loss("bce"), optim.SGD(bnet, lr=0.1))
    Xb, yb, _, _ = _batches(backend, "bce")
    for _ in range(20):
        bstep(Xb, yb)
    with pytest.raises(ValueError, match=r"target must be in \[0, 1\]"):
        bstep(Xb, yb * 2.0)
    # a loss that no parameter reaches (the model's output taken as a plain array) trained
    # nothing, silently
    dnet = _net(backend)
    dstep = xpdl.compile_step(lambda x: dnet(x).data, L.cross_entropy,
                              optim.SGD(dnet, lr=0.1))
    with pytest.raises(ValueError, match="does not depend on any parameter"):
        dstep(X, y)


def test_jax_replays_off_the_cpu_read_no_values():
    """JAX's compiled step checks the labels on the host where its arrays live in host
    memory (the CPU); on another device (a GPU) it reads no values, as CuPy and torch on
    CUDA do: each check (eager min and max, then a wait) costs more than the step. The
    device is decided once per program (``_host_checks``); here it is set as a GPU sets
    it."""
    pytest.importorskip("jax")
    from conftest import _make

    backend = _make("jax")
    net = _net(backend)
    step = xpdl.compile_step(net, L.cross_entropy, optim.Adam(net, lr=1e-2))
    X, y, _, _ = _batches(backend, "cross_entropy")
    for _ in range(6):
        step(X, y)
    assert step.mode == "replay"
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 3\)"):
        step(X, y + 3)  # on the CPU: checked, nothing updated
    progs = [e[1] for e in step._programs.values() if e[0] == "ok"]
    assert progs and all(p._host_checks is True for p in progs)
    for p in progs:
        p._host_checks = False
    before = [backend.to_numpy(p.data).copy() for p in net.parameters()]
    step(X, y + 3)  # not read: a silent update, as on CuPy
    assert any(not np.array_equal(backend.to_numpy(p.data), b)
               for p, b in zip(net.parameters(), before))


def test_sample_weight_with_a_stock_loss_says_how_to_weight(backend):
    # step(X, y, w) calls loss_fn(out, y, w); xpdl.losses' third parameter is reduction,
    # so the weights arrived as a reduction ("reduction must be one of ..., got Tensor")
    net = _net(backend)
    step = xpdl.compile_step(net, L.cross_entropy, optim.SGD(net, lr=0.1))
    X, y, w, _ = _batches(backend, "cross_entropy")
    before = [backend.to_numpy(p.data).copy() for p in net.parameters()]
    with pytest.raises(TypeError, match="loss_fn=xpdl.losses.cross_entropy takes no weights"):
        step(X, y, w)
    for p, b in zip(net.parameters(), before):
        np.testing.assert_array_equal(backend.to_numpy(p.data), b)
        assert p.grad is None
    # the suggested loss trains with the weights: its first step is the eager tape's
    net2 = _net(backend)
    weighted = xpdl.compile_step(
        net2, lambda out, t, s: F.mean(L.cross_entropy(out, t, reduction="none") * s),
        optim.SGD(net2, lr=0.1))
    ref = F.mean(L.cross_entropy(_net(backend)(X), y, reduction="none") * w)
    np.testing.assert_allclose(float(weighted(X, y, w)), float(ref), rtol=backend.rtol)


def test_a_batch_on_another_device_is_named(backend):
    # compile_step and explain.saliency failed inside the forward with the backend's own
    # error (array_api_strict's "Arrays from two different devices"; torch's RuntimeError)
    if not backend.name.startswith("array_api_strict"):
        pytest.skip("one device here (array_api_strict has several on the CPU)")
    import array_api_strict as strict

    other = strict.Device("device2")
    net = _net(backend)
    step = xpdl.compile_step(net, L.cross_entropy, optim.SGD(net, lr=0.1))
    X, y, _, _ = _batches(backend, "cross_entropy")
    Xo, yo = strict.asarray(X, device=other), strict.asarray(y, device=other)
    before = [backend.to_numpy(p.data).copy() for p in net.parameters()]
    for args, name in (((Xo, y), "X"), ((X, yo), "y")):
        with pytest.raises(ValueError, match=f"compile_step: {name} is on device"):
            step(*args)
    for _ in range(3):
        step(X, y)  # the step still records and replays on its own device
    assert step.mode == "replay"
    with pytest.raises(ValueError, match="compile_step: X is on device"):
        step(Xo, y)
    after = [backend.to_numpy(p.data) for p in net.parameters()]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))
    from xpdl.explain import saliency

    with pytest.raises(ValueError, match="explain: the model lives on device"):
        saliency(net, Xo)


def _into_results(prog):
    """The slots the replay's buffered calls (linear, ReLU and their VJPs) write."""
    return [s for node in prog.nodes for s in node[2]
            if s is not None and s in prog._bufferable]


def test_replay_writes_linear_and_relu_results_into_planned_buffers(backend):
    """On NumPy, CuPy and torch a replay writes the products and ReLUs (forward and
    backward) into buffers planned once and kept from step to step (``out=``), with the
    tape's values: on NumPy a replayed step then allocates less than one activation (the
    tape allocates all of them every step); two values alive at the same call never share
    a buffer. Elsewhere the replay makes fresh arrays."""
    import tracemalloc

    g = np.random.default_rng(0)
    X = backend.asarray(g.normal(size=(64, 16)))
    y = backend.asarray(g.integers(0, 3, 64), dtype=backend.xp.int64)
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    make = lambda: nn.Sequential(nn.Linear(16, 256, rng=0, **kw), nn.ReLU(),  # noqa: E731
                                 nn.Linear(256, 256, rng=1, **kw), nn.ReLU(),
                                 nn.Linear(256, 3, rng=2, **kw))
    m1, m2 = make(), make()
    o1, o2 = optim.Adam(m1, lr=1e-3), optim.Adam(m2, lr=1e-3)
    step = xpdl.compile_step(m1, _loss("cross_entropy"), o1)
    # bit for bit, but on JAX, where every step runs jax.jit-compiled (XLA's fused
    # arithmetic rounds differently from the tape's eager calls)
    same = np.testing.assert_array_equal if backend.name != "jax" else functools.partial(
        np.testing.assert_allclose, rtol=backend.rtol)
    for _ in range(4):
        loss = step(X, y)
        ref = _eager_step(m2, _loss("cross_entropy"), o2, X, y, None)
        same(backend.to_numpy(loss), backend.to_numpy(ref))
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        same(backend.to_numpy(p1.data), backend.to_numpy(p2.data))
    (prog,) = [e[1] for e in step._programs.values() if e[0] == "ok"]
    if backend.kind not in ("numpy", "cupy", "torch"):
        assert step._flat is None  # no flat layout, no buffers: fresh arrays
        return
    (plan,) = prog._flat_plans.values()
    buffers = plan[5]
    assert sorted(buffers) == sorted(_into_results(prog)) and len(buffers) >= 8
    # liveness: a buffer serves several values, never two alive at the same call
    assert len({id(b) for b in buffers.values()}) < len(buffers)
    alive = set()
    last = {a: i for i, st in enumerate(plan[0]) for a in st[1]}
    for i, (_, _args, outs, _, _) in enumerate(plan[0]):
        alive = {s for s in alive if last.get(s, -1) >= i}
        for s in outs:
            if s in buffers:
                assert all(buffers[t] is not buffers[s] for t in alive)
                alive.add(s)
    if backend.name == "numpy":
        act = 64 * 256 * X.dtype.itemsize
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            step(X, y)
            grew = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert grew < act, (grew, act)


def test_replay_fuses_linear_relu_layers_with_the_tapes_bits(backend):
    """On NumPy with Numba, a linear layer followed by ReLU runs as compiled passes (the
    bias added while clipping; ReLU's VJP summing the bias gradient as it masks), with the
    tape's bits over 40 steps; a pre-activation that something else reads too (a skip
    connection here) is not fused. Elsewhere nothing is fused and the replay still
    equals the tape."""
    g = np.random.default_rng(3)
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 128, rng=0, **kw)
            self.b = nn.Linear(128, 128, rng=1, **kw)
            self.c = nn.Linear(128, 3, rng=2, **kw)

        def forward(self, x):
            z = self.b(F.relu(self.a(x)))
            return self.c(F.relu(z)) + z[:, :3] * 0.01  # z read twice: not fused

    nets = Net(), Net()
    opts = [optim.Adam(m, lr=1e-2) for m in nets]
    loss_fn = _loss("cross_entropy")
    step = xpdl.compile_step(nets[0], loss_fn, opts[0])
    # bit for bit on NumPy; jax.jit (XLA) and the other libraries' kernels may round
    # differently, so there the usual closeness
    exact = _exact(backend)
    check = np.testing.assert_array_equal if exact else functools.partial(
        np.testing.assert_allclose, rtol=1e-10 if backend.is64 else 1e-4,
        atol=1e-12 if backend.is64 else 1e-5)
    for i in range(40):
        X = backend.asarray(g.normal(size=(48, 16)))
        y = backend.asarray(g.integers(0, 3, 48), dtype=backend.xp.int64)
        loss = step(X, y)
        ref = _eager_step(nets[1], loss_fn, opts[1], X, y, None)
        check(backend.to_numpy(loss), backend.to_numpy(ref), err_msg=str(i))
    for p1, p2 in zip(nets[0].parameters(), nets[1].parameters()):
        check(backend.to_numpy(p1.data), backend.to_numpy(p2.data))
    (prog,) = [e[1] for e in step._programs.values() if e[0] == "ok"]
    fused = backend.name == "numpy" and xpdl._compiled.available()
    assert prog.fused == ((1, 1) if fused else (0, 0))


def test_values_that_outlive_a_replayed_step_are_never_buffers(backend):
    """A loss that is a view of a layer's output, and views of buffered values read after
    the value's own last reader (a transposed activation), keep their values: each kept
    loss equals the tape's for its step, 12 steps bit for bit."""
    g = np.random.default_rng(1)
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4, rng=0, **kw)
            self.b = nn.Linear(4, 4, rng=1, **kw)
            self.c = nn.Linear(4, 1, rng=2, **kw)

        def forward(self, x):
            h = F.relu(self.a(x))
            t = F.relu(self.b(h)).mT  # a view of a buffered result
            return self.c((t * 1.5).mT + h)

    def loss_fn(out, y):
        return F.reshape(out, ()) * y  # a view of the last linear's output, scaled

    m1, m2 = Net(), Net()
    o1, o2 = optim.SGD(m1, lr=0.05), optim.SGD(m2, lr=0.05)
    step = xpdl.compile_step(m1, loss_fn, o1)
    kept, refs = [], []
    for i in range(12):
        X = backend.asarray(g.normal(size=(1, 3)))
        y = backend.asarray(np.array(1.0 + i / 10))
        kept.append(step(X, y))
        refs.append(_eager_step(m2, loss_fn, o2, X, y, None))
    assert step.mode == "replay"
    got = [float(backend.to_numpy(a)) for a in kept]
    # (to rounding on JAX, where every step runs jax.jit-compiled)
    same = np.testing.assert_array_equal if backend.name != "jax" else functools.partial(
        np.testing.assert_allclose, rtol=backend.rtol)
    same(got, [float(backend.to_numpy(a)) for a in refs])
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        same(backend.to_numpy(p1.data), backend.to_numpy(p2.data))
