"""Optimizers: 40 steps on least squares match torch.optim, functional and object forms."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

import xpdl
from xpdl import Tensor, optim
from xpdl.losses import mse
from xpdl.optim import schedules

HAS_TORCH = importlib.util.find_spec("torch") is not None
STEPS = 40

CONFIGS = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    ("gd", dict(lr=0.1)),
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adamw", dict(lr=0.05)),
    ("adamw", dict(lr=0.05, weight_decay=0.3)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, momentum=0.9)),
    ("rmsprop", dict(lr=0.01, centered=True)),
    ("rmsprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("adagrad", dict(lr=0.1)),
    ("adagrad", dict(lr=0.1, weight_decay=0.1)),
    ("adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("adamw", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]


def _problem():
    g = np.random.default_rng(0)
    X = g.normal(size=(20, 3))
    Y = X @ g.normal(size=(3, 2)) + 0.1 * g.normal(size=(20, 2))
    return X, Y, {"W": g.normal(size=(2, 3)), "b": g.normal(size=(2,))}


def _torch_trajectory(name, kw):
    import torch

    X, Y, p0 = _problem()
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    cls = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
           "adagrad": torch.optim.Adagrad}[name]
    opt = cls([ps["W"], ps["b"]], **kw)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(Xt @ ps["W"].T + ps["b"], Yt).backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in ps.items()}


def _loss(X, Y):
    return lambda W, b: mse(Tensor(X) @ W.T + b, Y)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_functional_optimizer_matches_torch(backend, cfg):
    name, kw = cfg
    ref = _torch_trajectory(name, kw)
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    params = {k: backend.asarray(v) for k, v in p0.items()}
    tx = getattr(optim, name)(**kw)
    state = tx.init(params)
    grad_fn = xpdl.grad(_loss(X, Y), argnums=(0, 1))
    for _ in range(STEPS):
        gW, gb = grad_fn(params["W"], params["b"])
        updates, state = tx.update({"W": gW, "b": gb}, state, params)
        params = optim.apply_updates(params, updates)
    tol = 1e-9 if backend.is64 else 2e-3
    for k in params:
        assert params[k].device == backend.device
        np.testing.assert_allclose(backend.to_numpy(params[k]), ref[k], rtol=tol, atol=tol)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_without_a_fused_adam_kernel_takes_the_chain(backend, monkeypatch):
    """Where torch's fused Adam kernel is missing or raises (older releases have none for
    the CPU), the in-place chain does the step: still torch.optim's trajectory, and the
    kernel is not tried again for that device and dtype."""
    if backend.name != "torch":
        pytest.skip("torch's own kernel is used on torch tensors only")
    import torch

    from xpdl.optim import _fused

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise NotImplementedError("no CPU kernel in this build")

    monkeypatch.setattr(torch, "_fused_adam_", broken)
    monkeypatch.setattr(_fused, "_TORCH_FUSED_FAILED", set())
    ref = _torch_trajectory("adam", {"lr": 0.05})
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    W = Tensor(backend.asarray(p0["W"]), requires_grad=True)
    b = Tensor(backend.asarray(p0["b"]), requires_grad=True)
    opt = optim.Adam({"W": W, "b": b}, lr=0.05)
    loss = _loss(X, Y)
    for _ in range(STEPS):
        opt.zero_grad()
        loss(W, b).backward()
        opt.step()
    np.testing.assert_allclose(backend.to_numpy(W.data), ref["W"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(backend.to_numpy(b.data), ref["b"], rtol=1e-9, atol=1e-9)
    assert len(calls) == 1


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "portable"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_object_optimizer_matches_torch(backend, cfg, fused):
    name, kw = cfg
    ref = _torch_trajectory(name, kw)
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    W = Tensor(backend.asarray(p0["W"]), requires_grad=True)
    b = Tensor(backend.asarray(p0["b"]), requires_grad=True)
    cls = {"sgd": optim.SGD, "gd": optim.GD, "adam": optim.Adam, "adamw": optim.AdamW,
           "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[name]
    opt = cls({"W": W, "b": b}, **kw)
    opt.use_fused = fused
    loss = _loss(X, Y)
    for _ in range(STEPS):
        opt.zero_grad()
        loss(W, b).backward()
        opt.step()
    tol = 1e-9 if backend.is64 else 2e-3
    np.testing.assert_allclose(backend.to_numpy(W.data), ref["W"], rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(b.data), ref["b"], rtol=tol, atol=tol)


def test_object_optimizer_never_writes_user_arrays(backend):
    X_h, Y_h, p0 = _problem()
    user = backend.asarray(p0["W"])
    before = backend.to_numpy(user).copy()
    W = Tensor(user, requires_grad=True)
    b = Tensor(backend.asarray(p0["b"]), requires_grad=True)
    opt = optim.Adam([W, b], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        _loss(backend.asarray(X_h), backend.asarray(Y_h))(W, b).backward()
        opt.step()
    np.testing.assert_array_equal(backend.to_numpy(user), before)
    assert not np.allclose(backend.to_numpy(W.data), before)


def test_read_only_numpy_parameters_are_not_written():
    w = np.ones(3)
    w.flags.writeable = False
    t = Tensor(w, requires_grad=True)
    opt = optim.SGD([t], lr=0.5, momentum=0.9)
    (t * t).sum().backward()
    opt.step()
    np.testing.assert_array_equal(w, np.ones(3))
    np.testing.assert_allclose(t.data, np.zeros(3))


def test_functional_update_is_pure(backend):
    params = {"w": backend.asarray(np.array([1.0, -2.0]))}
    grads = {"w": backend.asarray(np.array([0.5, 0.5]))}
    tx = optim.adam(0.1)
    state = tx.init(params)
    snapshot = {k: (backend.to_numpy(v).copy() if not isinstance(v, (int, float, tuple)) else v)
                for k, v in state.items()}
    tx.update(grads, state, params)
    for k, v in state.items():
        if isinstance(v, (int, float, tuple)):
            assert v == snapshot[k]
        else:
            np.testing.assert_array_equal(backend.to_numpy(v), snapshot[k])


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_clip_by_global_norm_matches_torch(backend):
    import torch

    g_h = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}
    ts = [torch.tensor(v) for v in g_h.values()]
    params = [torch.zeros_like(t, requires_grad=True) for t in ts]
    for p, t in zip(params, ts):
        p.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(params, 2.0)
    tx = optim.clip_by_global_norm(2.0)
    out, _ = tx.update({k: backend.asarray(v) for k, v in g_h.items()}, {})
    for v, p in zip(out.values(), params):
        np.testing.assert_allclose(backend.to_numpy(v), p.grad.numpy(), rtol=1e-6)
    small, _ = tx.update({"a": backend.asarray(np.array([0.1, 0.1]))}, {})
    np.testing.assert_allclose(backend.to_numpy(small["a"]), [0.1, 0.1], rtol=1e-6)


def test_state_dict_round_trip_continues_identically(backend):
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)

    def run(n, opt=None, W=None, b=None):
        W = W if W is not None else Tensor(backend.asarray(p0["W"]), requires_grad=True)
        b = b if b is not None else Tensor(backend.asarray(p0["b"]), requires_grad=True)
        opt = opt or optim.RMSprop({"W": W, "b": b}, lr=0.01, momentum=0.9, centered=True)
        for _ in range(n):
            opt.zero_grad()
            _loss(X, Y)(W, b).backward()
            opt.step()
        return opt, W, b

    _, W_full, _ = run(10)
    opt, W, b = run(4)
    sd = opt.state_dict()
    assert sd["2/step"] == 4 and "0/square_avg/W" in sd and "1/momentum/b" in sd
    W2 = Tensor(backend.asarray(backend.to_numpy(W.data)), requires_grad=True)
    b2 = Tensor(backend.asarray(backend.to_numpy(b.data)), requires_grad=True)
    opt2 = optim.RMSprop({"W": W2, "b": b2}, lr=0.01, momentum=0.9, centered=True)
    opt2.load_state_dict(sd)
    run(6, opt2, W2, b2)
    np.testing.assert_allclose(backend.to_numpy(W2.data), backend.to_numpy(W_full.data),
                               rtol=1e-12 if backend.is64 else 1e-5)
    with pytest.raises(ValueError, match="state keys"):
        opt2.load_state_dict({"step": 1})
    for not_a_dict in (list(sd), list(sd.items()), None):  # a list was "keys differ"
        with pytest.raises(TypeError, match="takes the dict state_dict"):
            opt2.load_state_dict(not_a_dict)


def test_schedules():
    assert schedules.constant(0.1)(100) == 0.1
    s = schedules.step_decay(1.0, 10, 0.5)
    assert [s(0), s(9), s(10), s(25)] == [1.0, 1.0, 0.5, 0.25]
    e = schedules.exponential_decay(2.0, 0.5, transition_steps=2)
    assert e(4) == pytest.approx(0.5)
    c = schedules.cosine_decay(1.0, 100, alpha=0.1)
    assert c(0) == pytest.approx(1.0) and c(100) == pytest.approx(0.1) and c(500) == c(100)
    assert c(50) == pytest.approx(0.1 + 0.9 * 0.5)
    w = schedules.linear_warmup(schedules.cosine_decay(1.0, 10), 5)
    assert [w(0), w(5)] == [0.0, 1.0] and w(2) == pytest.approx(0.4)
    assert w(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))


def test_schedule_drives_sgd(backend):
    params = {"w": backend.asarray(np.array([1.0]))}
    grads = {"w": backend.asarray(np.array([1.0]))}
    tx = optim.sgd(schedules.step_decay(1.0, 1, 0.5))
    state = tx.init(params)
    seen = []
    for _ in range(3):
        u, state = tx.update(grads, state, params)
        seen.append(float(backend.to_numpy(u["w"])[0]))
    assert seen == [-1.0, -0.5, -0.25]


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="nesterov"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="learning rate"):
        optim.adam(-1.0)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_by_global_norm(0.0)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="requires_grad"):
        optim.SGD([Tensor(np.ones(2))], lr=0.1)


nan = float("nan")


@pytest.mark.parametrize("make,match", [
    # each was accepted and trained to NaN or diverged; torch.optim refuses them too
    (lambda: optim.adam(betas=(1.5, 0.9)), "betas"),
    (lambda: optim.adamw(betas=(0.9, 1.0)), "betas"),
    (lambda: optim.adam(betas=(0.9,)), "betas"),
    (lambda: optim.adam(eps=-1.0), "eps must be non-negative"),
    (lambda: optim.adam(eps=nan), "eps must be non-negative"),
    (lambda: optim.adamw(weight_decay=-1.0), "weight_decay must be non-negative"),
    (lambda: optim.sgd(0.1, momentum=nan), "momentum must be non-negative"),
    (lambda: optim.sgd(0.1, weight_decay=nan), "weight_decay must be non-negative"),
    (lambda: optim.rmsprop(alpha=2.0), "alpha must be in"),
    (lambda: optim.rmsprop(momentum=-0.5), "momentum must be non-negative"),
    (lambda: optim.adagrad(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (lambda: optim.clip_by_global_norm(nan), "max_norm"),
    (lambda: optim.schedules.exponential_decay(0.1, -0.5), "decay_rate"),
    (lambda: optim.Adam([Tensor(np.ones(2), requires_grad=True)], eps=-1.0), "eps"),
])
def test_out_of_range_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,match", [
    # each raised "'>=' not supported between instances of 'str' and 'int'" or was taken
    (lambda: optim.sgd("0.1"), "learning rate must be a number or a schedule, got '0.1'"),
    (lambda: optim.adam(None), "learning rate must be a number or a schedule, got None"),
    (lambda: optim.sgd(True), "learning rate must be a number or a schedule, got True"),
    (lambda: optim.adam(1e-3, eps="1e-8"), "eps must be a number"),
    (lambda: optim.sgd(0.1, momentum=1j), "momentum must be a number"),
    (lambda: optim.adam(1e-3, betas=0.9), "betas must be two numbers"),
    (lambda: optim.adam(1e-3, betas=(0.9, "0.99")), "betas must be a number"),
    (lambda: optim.rmsprop(alpha=None), "alpha must be a number"),
    (lambda: optim.Adam([Tensor(np.ones(2), requires_grad=True)], lr="3e-4"), "learning rate"),
])
def test_settings_that_are_no_numbers_are_type_errors(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_numpy_numbers_and_0d_arrays_are_settings():
    for lr in (np.float32(0.1), np.array(0.1), 1):
        for tx in (optim.sgd(lr, momentum=np.float64(0.9)), optim.adam(lr, eps=np.array(0.0))):
            assert tx.check is None  # (a number, not a schedule)


def test_boundary_settings_are_accepted(backend):
    """The edges of each range still train: zero momentum, betas of 0, alpha 1, eps 0."""
    w = Tensor(backend.asarray(np.array([1.0, -2.0])), requires_grad=True)
    for opt in (optim.Adam([w], lr=0.1, betas=(0.0, 0.0), eps=0.0),
                optim.RMSprop([w], lr=0.1, alpha=1.0, eps=1e-8),
                optim.SGD([w], lr=0.1, momentum=0.0, weight_decay=0.0)):
        before = backend.to_numpy(w.data).copy()
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
        assert np.all(np.isfinite(backend.to_numpy(w.data)))
        assert not np.array_equal(backend.to_numpy(w.data), before)


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("sizes", [[(600, 500), (600,), (7, 600)], [(3, 4), (4,)]],
                         ids=["large-two-threads", "small-flat"])
def test_fused_numpy_paths_equal_the_portable_chain(name, sizes):
    """NumPy's fused Adam has two layouts (flat buffers for small models, per parameter on
    two threads for large ones); both must follow the portable chain."""
    g = np.random.default_rng(0)
    init = [g.normal(size=s) for s in sizes]
    grads = [[g.normal(size=s) for s in sizes] for _ in range(4)]
    out = []
    for fused in (True, False):
        ps = [Tensor(a.copy(), requires_grad=True) for a in init]
        opt = getattr(optim, {"adam": "Adam", "adamw": "AdamW"}[name])(ps, lr=0.01,
                                                                     weight_decay=0.1)
        opt.use_fused = fused
        for step in grads:
            for p, gr in zip(ps, step):
                p.grad = gr
            opt.step()
        out.append(([p.data.copy() for p in ps], opt.state_dict()))
    for a, b in zip(out[0][0], out[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for k, v in out[1][1].items():
        np.testing.assert_allclose(out[0][1][k], v, rtol=1e-12, atol=1e-14)


def test_transforms_and_schedules_run_under_jax_jit():
    """tx.update (and an object optimizer's transform) inside jax.jit: the step counters
    are traced there, so no Python math may touch them; the updates equal the eager
    ones to rounding over 12 steps, schedules included."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from xpdl import Tensor
    from xpdl.optim import schedules as S

    rs = np.random.default_rng(0)
    w0 = Tensor(jnp.asarray(rs.normal(size=(3, 4))), requires_grad=True)
    txs = {
        "adam": optim.adam(1e-2, weight_decay=1e-3),
        "adamw": optim.adamw(1e-2),
        "nesterov": optim.sgd(0.1, momentum=0.9, nesterov=True),
        "rmsprop": optim.rmsprop(1e-2, centered=True, momentum=0.5),
        "adagrad": optim.adagrad(0.1),
        "warmup_cosine": optim.adam(S.linear_warmup(S.cosine_decay(1e-2, 20), 5)),
        "step_decay": optim.sgd(S.step_decay(0.1, 4)),
        "clip_chain": optim.chain(optim.clip_by_global_norm(0.5), optim.adam(1e-2)),
        "object_Adam": optim.Adam({"w": w0}, lr=1e-2).transform,
    }
    for name, tx in txs.items():
        p = {"w": jnp.asarray(rs.normal(size=(3, 4))), "b": jnp.asarray(rs.normal(size=4))}
        st = tx.init(p)
        st_jit = dict(st)
        step = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p))
        for _ in range(12):
            g = {k: jnp.asarray(rs.normal(size=v.shape)) for k, v in p.items()}
            u, st = tx.update(g, st, p)
            uj, st_jit = step(g, st_jit, p)
            for k in u:
                np.testing.assert_allclose(np.asarray(uj[k]), np.asarray(u[k]), rtol=1e-12,
                                           atol=1e-15, err_msg=name)
            p = optim.apply_updates(p, u)
        assert int(st_jit[next(k for k in st_jit if k.endswith("step"))]) == \
            st[next(k for k in st if k.endswith("step"))]


@pytest.mark.parametrize("make,exc,match", [
    # each was accepted; NaN and negative values then trained the parameters to NaN or
    # uphill, a NaN step count gave NaN rates, True counted as one step
    (lambda: schedules.constant(nan), ValueError, "value must be >= 0"),
    (lambda: schedules.constant(-0.1), ValueError, "value must be >= 0"),
    (lambda: schedules.constant("0.1"), TypeError, "value must be a number or a schedule"),
    (lambda: schedules.step_decay(0.1, nan), ValueError, "step_size must be finite"),
    (lambda: schedules.step_decay(0.1, True), TypeError, "step_size must be a number of"),
    (lambda: schedules.step_decay(0.1, 10, gamma=-0.5), ValueError, "gamma must be >= 0"),
    (lambda: schedules.exponential_decay(nan, 0.9), ValueError, "init_value must be >= 0"),
    (lambda: schedules.exponential_decay(0.1, 0.9, nan), ValueError, "transition_steps"),
    (lambda: schedules.exponential_decay(0.1, 0.9, 0), ValueError, "transition_steps"),
    (lambda: schedules.cosine_decay(0.1, nan), ValueError, "decay_steps must be finite"),
    (lambda: schedules.cosine_decay(0.1, math.inf), ValueError, "decay_steps must be finite"),
    (lambda: schedules.cosine_decay(0.1, 10, alpha=-1.0), ValueError, "alpha must be >= 0"),
    (lambda: schedules.cosine_decay(0.1, 10, alpha=nan), ValueError, "alpha must be >= 0"),
    (lambda: schedules.linear_warmup(0.1, -1), ValueError, "warmup_steps must be finite"),
    (lambda: schedules.linear_warmup(0.1, 5, init_value=nan), ValueError, "init_value"),
    (lambda: optim.transforms.scale_by_learning_rate(nan), ValueError, "learning rate"),
])
def test_schedule_arguments_are_checked(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_schedule_arguments_at_their_edges_are_accepted():
    assert schedules.constant(0.0)(3) == 0.0
    assert schedules.constant(np.float32(0.5))(3) == 0.5
    assert schedules.constant(np.array(0.25))(3) == 0.25  # a 0-d array
    assert schedules.step_decay(1.0, np.int64(2), gamma=0.0)(3) == 0.0
    assert schedules.cosine_decay(1.0, 10, alpha=0.0)(10) == pytest.approx(0.0)
    assert schedules.linear_warmup(schedules.constant(1.0), 0)(0) == 1.0


def _bad_from(n, value):
    def lr(step):
        if isinstance(step, int):
            return 0.1 if step < n else value
        import jax.numpy as jnp  # traced inside jax.jit (compile_step on JAX)

        return jnp.where(step < n, 0.1, value)

    return lr


@pytest.mark.parametrize("bad", [nan, -0.1])
@pytest.mark.parametrize("opt_name", ["sgd", "momentum", "adam", "adamw", "rmsprop",
                                      "adagrad"])
@pytest.mark.parametrize("compiled", [False, True], ids=["step", "compile_step"])
def test_a_schedule_value_that_is_no_learning_rate_stops_before_any_update(
        backend, opt_name, bad, compiled):
    """A schedule giving NaN or a negative rate at step n (a user's lambda running past its
    range): ValueError naming the step, and the parameters and optimizer state stay as they
    were after step n - 1, on the fused, flat and portable paths and through compile_step
    (on JAX its jitted step)."""
    from xpdl import nn

    n = 24 if compiled else 3
    lr = _bad_from(n, bad)
    make = {"sgd": lambda p: optim.SGD(p, lr=lr),
            "momentum": lambda p: optim.SGD(p, lr=lr, momentum=0.9),
            "adam": lambda p: optim.Adam(p, lr=lr),
            "adamw": lambda p: optim.AdamW(p, lr=lr),
            "rmsprop": lambda p: optim.RMSprop(p, lr=lr, momentum=0.5),
            "adagrad": lambda p: optim.Adagrad(p, lr=lr)}[opt_name]
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    model = nn.Sequential(nn.Linear(3, 4, rng=0, **kw), nn.Tanh(), nn.Linear(4, 1, rng=1, **kw))
    opt = make(model)
    g = np.random.default_rng(0)
    X, y = backend.asarray(g.normal(size=(8, 3))), backend.asarray(g.normal(size=(8, 1)))

    def loss_fn(out, t):
        return mse(out, t)

    if compiled:
        step = xpdl.compile_step(model, loss_fn, opt)
    else:
        def step(X, y):
            opt.zero_grad()
            loss = loss_fn(model(Tensor(X)), y)
            loss.backward()
            opt.step()
    for _ in range(n):
        step(X, y)
    params = {k: backend.to_numpy(v).copy() for k, v in model.state_dict().items()}
    state = {k: (v if isinstance(v, (int, float, tuple)) else backend.to_numpy(v).copy())
             for k, v in opt.state_dict().items()}
    with pytest.raises(ValueError, match=f"learning-rate schedule gave .* at step {n};"):
        step(X, y)
    if compiled:
        assert step.mode == "replay"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(v), params[k], err_msg=k)
    after = opt.state_dict()
    assert set(after) == set(state)
    for k, v in after.items():
        if isinstance(v, (int, float, tuple)):
            assert v == state[k], k
        else:
            np.testing.assert_array_equal(backend.to_numpy(v), state[k], err_msg=k)


def test_a_schedule_that_gives_no_number_is_named(backend):
    params = {"w": backend.asarray(np.ones(3))}
    tx = optim.sgd(lambda t: "0.1")
    state = tx.init(params)
    with pytest.raises(TypeError, match="schedule gave '0.1' at step 0; a learning rate must "
                                        "be a number"):  # was float()'s own ValueError
        tx.update({"w": backend.asarray(np.ones(3))}, state, params)


def test_a_parameter_given_twice_is_refused(backend):
    """[w, w] updated w twice a step (torch warns about duplicates; tied weights in a
    Module are listed once, so only a hand-made list gets here)."""
    w = Tensor(backend.asarray(np.ones(2)), requires_grad=True)
    v = Tensor(backend.asarray(np.ones(3)), requires_grad=True)
    with pytest.raises(ValueError, match="same Tensor is given twice, as '0' and '2'"):
        optim.SGD([w, v, w], lr=0.1)
    with pytest.raises(ValueError, match="same Tensor is given twice, as 'a' and 'b'"):
        optim.Adam({"a": w, "b": w})
    with pytest.raises(ValueError, match="two parameters have the same name"):
        optim.Adam([("a", w), ("a", v)])


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "rmsprop"])
def test_a_gradient_of_another_shape_or_namespace_is_named_and_nothing_moves(backend, opt_name):
    """A ``.grad`` set by hand with another shape broadcast into NumPy's error
    ('operands could not be broadcast together with shapes (3,) () (2,)') or, of another
    namespace, failed inside the update ('str' object has no attribute 'type'). Now a
    ValueError/TypeError naming the parameter, raised before any parameter or state is
    written."""
    torch = pytest.importorskip("torch")
    make = {"sgd": lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
            "adam": lambda p: optim.Adam(p, lr=0.1),
            "rmsprop": lambda p: optim.RMSprop(p, lr=0.1)}[opt_name]
    a = Tensor(backend.asarray(np.array([1.0, 2.0])), requires_grad=True)
    b = Tensor(backend.asarray(np.array([3.0, 4.0, 5.0])), requires_grad=True)
    opt = make({"a": a, "b": b})
    a.grad, b.grad = backend.asarray(np.ones(2)), backend.asarray(np.ones(3))
    opt.step()  # a good step first, so there is state to keep
    before = [backend.to_numpy(a.data).copy(), backend.to_numpy(b.data).copy()]
    state = {k: (v if isinstance(v, (int, float, tuple)) else backend.to_numpy(v).copy())
             for k, v in opt.state_dict().items()}
    a.grad, b.grad = backend.asarray(np.ones(2)), backend.asarray(np.ones(2))
    with pytest.raises(ValueError, match=r"gradient of 'b' has shape \(2,\), the parameter "
                                         r"\(3,\)"):
        opt.step()
    other = np.ones(3) if backend.name != "numpy" else torch.ones(3, dtype=torch.float64)
    b.grad = other
    with pytest.raises(TypeError, match="gradient of 'b' is a .*; move it first"):
        opt.step()
    np.testing.assert_array_equal(backend.to_numpy(a.data), before[0])
    np.testing.assert_array_equal(backend.to_numpy(b.data), before[1])
    for k, v in opt.state_dict().items():
        if isinstance(v, (int, float, tuple)):
            assert v == state[k]
        else:
            np.testing.assert_array_equal(backend.to_numpy(v), state[k])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "clip"])
def test_numpy_scalar_settings_train_like_python_floats(backend, name):
    """Settings from NumPy (np.float32(0.1), a value of np.logspace...) failed on
    array_api_strict ('Expected Array or Python scalar', or 'Can't convert array on
    device1 to a NumPy array'); now they are the Python floats of the same value: the same
    trajectory, bit for bit, on every backend and both optimizer paths."""
    f32, f64 = np.float32, np.float64

    def make(np_scalars, p):
        # the NumPy scalar, or the Python float of exactly its value
        c = f32 if np_scalars else (lambda v: float(f32(v)))
        d = f64 if np_scalars else (lambda v: float(f64(v)))
        return {"sgd": lambda: optim.SGD(p, lr=c(0.1), momentum=d(0.9), nesterov=True,
                                         weight_decay=c(0.01)),
                "adam": lambda: optim.Adam(p, lr=c(0.1), betas=(c(0.9), d(0.99)), eps=c(1e-8),
                                           weight_decay=d(0.1)),
                "adamw": lambda: optim.AdamW(p, lr=c(0.1), weight_decay=d(0.1)),
                "rmsprop": lambda: optim.RMSprop(p, lr=c(0.01), alpha=d(0.9), eps=c(1e-6),
                                                 momentum=c(0.5), centered=True),
                "adagrad": lambda: optim.Adagrad(p, lr=c(0.1), initial_accumulator_value=d(0.1)),
                "clip": lambda: optim.Optimizer(p, optim.chain(optim.clip_by_global_norm(c(0.5)),
                                                               optim.sgd(c(0.1))))}[name]()

    out = []
    for np_scalars in (False, True):
        for fused in (True, False):
            w = Tensor(backend.asarray(np.array([1.0, -2.0, 0.5])), requires_grad=True)
            opt = make(np_scalars, [w])
            opt.use_fused = fused
            for _ in range(5):
                opt.zero_grad()
                ((w * w * w).sum() + (w * 0.3).sum()).backward()
                opt.step()
            out.append(backend.to_numpy(w.data))
    np.testing.assert_array_equal(out[2], out[0])  # NumPy scalars = Python floats, fused
    np.testing.assert_array_equal(out[3], out[1])  # and portable


def test_functional_update_keeps_state_and_names_bad_trees(backend):
    # Optax's loop: updates, state = tx.update(grads, state, params). Gradients for some
    # parameters only dropped the others' state (the next full update: KeyError
    # 'exp_avg/b'); an unknown key was KeyError 'exp_avg/z'; a wrong shape NumPy's
    # broadcast error; init([...]) AttributeError; chain(3) was accepted
    P = {"w": backend.asarray(np.ones(3)), "b": backend.asarray(np.zeros(2))}
    G = {"w": backend.asarray(np.full(3, 0.5)), "b": backend.asarray(np.ones(2))}
    tx = optim.adam(0.1)
    state = tx.init(P)
    _, state = tx.update({"w": G["w"]}, state, P)  # b has no gradient this step
    assert {k.split("/")[-1] for k in state if "exp_avg" in k} == {"w", "b"}
    ups, state = tx.update(G, state, P)
    # b's moments were untouched by the partial step (zero before this one); the step
    # count is the transformation's (Optax's), now 2
    m, v, t = 0.1 * 1.0, 0.001 * 1.0, 2
    ref = -0.1 * (m / (np.sqrt(v) / np.sqrt(1 - 0.999 ** t) + 1e-8)) / (1 - 0.9 ** t)
    np.testing.assert_allclose(backend.to_numpy(ups["b"]), [ref, ref], rtol=1e-6)
    with pytest.raises(ValueError, match=r"grads name parameters that params do not: \['z'\]"):
        tx.update({**G, "z": backend.asarray(np.ones(1))}, state, P)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(4,\), the parameter \(3,\)"):
        tx.update({"w": backend.asarray(np.ones(4)), "b": G["b"]}, state, P)
    for params in (P, None):  # None for a gradient: "has shape (), the parameter (3,)"
        with pytest.raises(TypeError, match=r"grads\['w'\] must be an array, got NoneType"):
            tx.update({"w": None, "b": G["b"]}, state, params)
    with pytest.raises(ValueError, match="the state has no entry"):
        tx.update(G, optim.sgd(0.1, momentum=0.9).init(P), P)
    with pytest.raises(TypeError, match="params must be a dict"):
        tx.init([P["w"]])
    with pytest.raises(TypeError, match="must be a floating array"):
        tx.init({"w": backend.asarray(np.arange(3), dtype=backend.xp.int64)})
    with pytest.raises(TypeError, match="takes gradient transformations"):
        optim.chain(optim.adam(0.1), 3)
    with pytest.raises(ValueError, match=r"updates\['w'\] has shape"):
        optim.apply_updates(P, {"w": backend.asarray(np.ones(4))})
    with pytest.raises(ValueError, match="updates name parameters that params do not"):
        optim.apply_updates(P, {"v": backend.asarray(np.ones(3))})


# Steps at which "b" and "c" take part in the loss (else their .grad stays None): torch
# counts each parameter's own steps, which Adam's bias correction reads.
_USES_B = [i % 3 != 1 for i in range(STEPS)]
_USES_C = [i in (0, 4, 5, 9, 20, 21, 22) or i > 30 for i in range(STEPS)]


def _partial_loss(X, Y, W, b, c, i, lib):
    out = X @ W.T + (b if _USES_B[i] else 0.0)
    loss = ((out - Y) ** 2).mean()
    if _USES_C[i]:
        loss = loss + (c * c * c).sum() * 0.1 + (out[:, :1] * c[0]).mean()
    return loss


def _torch_partial_trajectory(name, kw, steps=STEPS):
    import torch

    X, Y, p0 = _problem()
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    ps["c"] = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    cls = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
           "adagrad": torch.optim.Adagrad}[name]
    opt = cls([ps["W"], ps["b"], ps["c"]], **kw)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for i in range(steps):
        opt.zero_grad()
        _partial_loss(Xt, Yt, ps["W"], ps["b"], ps["c"], i, torch).backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in ps.items()}


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "portable"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_parameters_that_miss_steps_follow_torch(backend, cfg, fused):
    """A parameter without a gradient is skipped, and Adam's bias correction counts only
    the steps it took part in, as torch.optim's per-parameter ``step`` does."""
    name, kw = cfg
    ref = _torch_partial_trajectory(name, kw)
    X_h, Y_h, p0 = _problem()
    X, Y = Tensor(backend.asarray(X_h)), Tensor(backend.asarray(Y_h))
    ps = {k: Tensor(backend.asarray(v), requires_grad=True) for k, v in p0.items()}
    ps["c"] = Tensor(backend.asarray(np.array([0.3, -0.2])), requires_grad=True)
    cls = {"sgd": optim.SGD, "gd": optim.GD, "adam": optim.Adam, "adamw": optim.AdamW,
           "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[name]
    opt = cls(ps, **kw)
    opt.use_fused = fused
    for i in range(STEPS):
        opt.zero_grad()
        _partial_loss(X, Y, ps["W"], ps["b"], ps["c"], i, None).backward()
        opt.step()
    tol = 1e-9 if backend.is64 else 2e-3
    for k in ("W", "b", "c"):
        np.testing.assert_allclose(backend.to_numpy(ps[k].data), ref[k], rtol=tol, atol=tol,
                                   err_msg=k)


def _torch_after_partial(name, kw, first, then):
    """torch: ``first`` steps of the partial loss, then ``then`` steps using every
    parameter (``_partial_loss`` at a step where b and c are both used)."""
    import torch

    X, Y, p0 = _problem()
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    ps["c"] = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    opt = cls([ps["W"], ps["b"], ps["c"]], **kw)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for i in range(first + then):
        opt.zero_grad()
        _partial_loss(Xt, Yt, ps["W"], ps["b"], ps["c"], i if i < first else 0, torch).backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in ps.items()}


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("name,kw", [("adam", dict(lr=0.05)),
                                     ("adamw", dict(lr=0.05, weight_decay=0.3)),
                                     ("adam", dict(lr=0.05, amsgrad=True))])
def test_compile_step_after_missed_steps_and_a_saved_state_follow_torch(backend, name, kw):
    """Eager steps where parameters miss steps, the state saved and loaded into a new
    optimizer (the steps behind travel in the state dict), then replayed steps of
    compile_step (flat steppers, jax.jit) that keep each parameter's own count."""
    first, then = 12, 30
    ref = _torch_after_partial(name, kw, first, then)
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    ps = {k: Tensor(backend.asarray(v), requires_grad=True) for k, v in p0.items()}
    ps["c"] = Tensor(backend.asarray(np.array([0.3, -0.2])), requires_grad=True)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW}[name]
    opt = cls(ps, **kw)
    for i in range(first):
        opt.zero_grad()
        _partial_loss(Tensor(X), Tensor(Y), ps["W"], ps["b"], ps["c"], i, None).backward()
        opt.step()
    sd = opt.state_dict()
    # b missed 4 of the first 12 steps, c 8
    assert sd["behind/b"] == 4 and sd["behind/c"] == 8 and "behind/W" not in sd
    ps = {k: Tensor(backend.asarray(backend.to_numpy(v.data)), requires_grad=True)
          for k, v in ps.items()}
    opt = cls(ps, **kw)
    opt.load_state_dict(sd)
    W, b, c = ps["W"], ps["b"], ps["c"]
    step = xpdl.compile_step(lambda x: x @ W.T + b,
                             lambda out, y: _partial_loss_of_output(out, y, c), opt)
    for _ in range(then):
        step(X, Y)
    assert step.mode == "replay"
    tol = 1e-9 if backend.is64 else 2e-3
    for k in ("W", "b", "c"):
        np.testing.assert_allclose(backend.to_numpy(ps[k].data), ref[k], rtol=tol, atol=tol,
                                   err_msg=k)


def _partial_loss_of_output(out, Y, c):
    # _partial_loss at a step that uses b and c, from the model's output
    return ((out - Y) ** 2).mean() + (c * c * c).sum() * 0.1 + (out[:, :1] * c[0]).mean()


def test_steps_behind_in_a_state_dict_are_checked(backend):
    W = Tensor(backend.asarray(np.ones((2, 3))), requires_grad=True)
    opt = optim.Adam({"W": W}, lr=0.1)
    sd = opt.state_dict()
    assert not any(k.startswith("behind/") for k in sd)  # nothing behind: the usual keys
    with pytest.raises(ValueError, match="behind/V names no parameter"):
        opt.load_state_dict({**sd, "behind/V": 1})
    with pytest.raises(ValueError, match="non-negative integer"):
        opt.load_state_dict({**sd, "behind/W": -1})
    opt.load_state_dict({**sd, "behind/W": 0})  # none behind: the keys of a fresh state
    assert set(opt.state_dict()) == set(sd)
    opt.load_state_dict({**sd, "behind/W": 3})
    assert opt.state_dict()["behind/W"] == 3
    sgd = optim.SGD({"W": W}, lr=0.1)  # one count serves all: no steps behind to load
    with pytest.raises(ValueError, match=r"unexpected \['behind/W'\]"):
        sgd.load_state_dict({**sgd.state_dict(), "behind/W": 1})


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[0] in ("adam", "sgd")][:4], ids=str)
def test_zero_grad_to_zeros_and_a_closure_follow_torch(backend, cfg):
    """``zero_grad(set_to_none=False)`` leaves zero gradients, so a parameter the loss
    does not reach still steps (its moments decay), and ``step(closure)`` returns the
    closure's loss: both as in torch.optim, step for step over the partial losses."""
    import torch

    name, kw = cfg
    X_h, Y_h, p0 = _problem()
    tps = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    tps["c"] = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    tcls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name]
    topt = tcls([tps["W"], tps["b"], tps["c"]], **kw)
    Xt, Yt = torch.tensor(X_h), torch.tensor(Y_h)
    X, Y = Tensor(backend.asarray(X_h)), Tensor(backend.asarray(Y_h))
    ps = {k: Tensor(backend.asarray(v), requires_grad=True) for k, v in p0.items()}
    ps["c"] = Tensor(backend.asarray(np.array([0.3, -0.2])), requires_grad=True)
    opt = {"sgd": optim.SGD, "adam": optim.Adam}[name](ps, **kw)
    tol = 1e-9 if backend.is64 else 2e-3
    for i in range(STEPS):
        def tclosure(i=i):
            topt.zero_grad(set_to_none=False)
            loss = _partial_loss(Xt, Yt, tps["W"], tps["b"], tps["c"], i, torch)
            loss.backward()
            return loss

        def closure(i=i):
            opt.zero_grad(set_to_none=False)
            loss = _partial_loss(X, Y, ps["W"], ps["b"], ps["c"], i, None)
            loss.backward()
            return loss

        tl, xl = topt.step(tclosure), opt.step(closure)
        assert float(xl.item()) == pytest.approx(float(tl.detach()), rel=tol, abs=tol)
    for k in ("W", "b", "c"):
        np.testing.assert_allclose(backend.to_numpy(ps[k].data), tps[k].detach().numpy(),
                                   rtol=tol, atol=tol, err_msg=k)
    assert opt.step() is None  # no closure: nothing to return, as in torch


def test_module_zero_grad_to_zeros(backend):
    from xpdl import nn

    m = nn.Linear(3, 2, rng=xpdl.random.Generator(0), xp=backend.xp, device=backend.device)
    m.zero_grad(set_to_none=False)  # no gradients yet: they stay None, as in torch
    assert m.weight.grad is None
    x = Tensor(backend.asarray(np.ones((4, 3)), dtype=backend.xp.float32))
    m(x).sum().backward()
    g = m.weight.grad
    m.zero_grad(set_to_none=False)
    assert m.weight.grad is not g and m.weight.grad.shape == (2, 3)
    assert float(backend.to_numpy(m.weight.grad).sum()) == 0.0
    assert float(backend.to_numpy(g).sum()) != 0.0  # the old gradient array is left as it was
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None


# -- param_groups: settings changed during training, as in PyTorch ------------------------
CHANGES = [("sgd", dict(lr=0.05), {"lr": 0.02, "momentum": 0.9}),
           ("sgd", dict(lr=0.05, momentum=0.9), {"nesterov": True, "weight_decay": 0.1}),
           ("gd", dict(lr=0.1), {"lr": 0.01}),
           ("adam", dict(lr=0.05), {"lr": 0.01, "betas": (0.8, 0.99)}),
           ("adamw", dict(lr=0.05), {"weight_decay": 0.3, "eps": 1e-6}),
           ("rmsprop", dict(lr=0.01), {"alpha": 0.9, "lr": 0.02}),
           ("adagrad", dict(lr=0.1), {"lr": 0.01, "weight_decay": 0.1})]


def _torch_changed_trajectory(name, kw, change, at):
    import torch

    X, Y, p0 = _problem()
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    cls = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
           "adagrad": torch.optim.Adagrad}[name]
    opt = cls([ps["W"], ps["b"]], **kw)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for i in range(STEPS):
        if i == at:
            opt.param_groups[0].update(change)
        opt.zero_grad()
        torch.nn.functional.mse_loss(Xt @ ps["W"].T + ps["b"], Yt).backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in ps.items()}


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("compiled", [False, True], ids=["step", "compile_step"])
@pytest.mark.parametrize("cfg", CHANGES, ids=[f"{n}-{'-'.join(c)}" for n, _, c in CHANGES])
def test_param_groups_settings_changed_mid_training_match_torch(backend, cfg, compiled):
    """opt.param_groups[0]["lr"] = ... (a learning rate decayed by hand, momentum switched
    on): the next steps use the new settings, through step() and through the replayed
    program of compile_step, as torch.optim's param_groups do."""
    from xpdl import nn

    name, kw, change = cfg
    ref = _torch_changed_trajectory(name, kw, change, at=15)
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    lin = nn.Linear(3, 2, rng=0, xp=backend.xp, device=backend.device,
                    dtype=backend.float_dtype)
    lin.weight.data = backend.asarray(p0["W"])
    lin.bias.data = backend.asarray(p0["b"])
    cls = {"sgd": optim.SGD, "gd": optim.GD, "adam": optim.Adam, "adamw": optim.AdamW,
           "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[name]
    opt = cls(lin, **kw)
    assert opt.defaults == {**opt.defaults, **kw}
    assert opt.param_groups[0]["params"] == [lin.weight, lin.bias]
    step = xpdl.compile_step(lin, mse, opt) if compiled else None
    for i in range(STEPS):
        if i == 15:
            opt.param_groups[0].update(change)
        if compiled:
            step(X, Y)
        else:
            opt.zero_grad()
            mse(lin(X), Y).backward()
            opt.step()
    tol = 1e-9 if backend.is64 else 2e-3
    np.testing.assert_allclose(backend.to_numpy(lin.weight.data), ref["W"], rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(backend.to_numpy(lin.bias.data), ref["b"], rtol=tol, atol=tol)
    assert opt.defaults == {**opt.defaults, **kw}  # (what it was made with)


def _torch_changed_saved_loaded(name, kw, change, at, save_at):
    """torch.optim changed by hand at step ``at``, its state dict loaded at step
    ``save_at`` into a new optimizer made with ``kw`` (the settings come back from it)."""
    import torch

    X, Y, p0 = _problem()
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    cls = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
           "adagrad": torch.optim.Adagrad}[name]
    opt = cls([ps["W"], ps["b"]], **kw)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for i in range(STEPS):
        if i == at:
            opt.param_groups[0].update(change)
        if i == save_at:
            sd = opt.state_dict()
            opt = cls([ps["W"], ps["b"]], **kw)
            opt.load_state_dict(sd)
        opt.zero_grad()
        torch.nn.functional.mse_loss(Xt @ ps["W"].T + ps["b"], Yt).backward()
        opt.step()
    return {k: v.detach().numpy() for k, v in ps.items()}


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("via", ["state_dict", "file", "compile_step"])
@pytest.mark.parametrize("cfg", CHANGES, ids=[f"{n}-{'-'.join(c)}" for n, _, c in CHANGES])
def test_settings_changed_by_hand_survive_a_saved_state_as_torch(backend, cfg, via, tmp_path):
    """A learning rate (momentum, betas, ...) changed through param_groups, then the state
    dict saved (or written with xpdl.save) and loaded into a new optimizer made with the
    first settings: the changed settings come back and the steps go on as torch.optim's
    after its own load_state_dict (they went on with the first settings)."""
    from xpdl import nn

    name, kw, change = cfg
    ref = _torch_changed_saved_loaded(name, kw, change, at=10, save_at=20)
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    lin = nn.Linear(3, 2, rng=0, xp=backend.xp, device=backend.device,
                    dtype=backend.float_dtype)
    lin.weight.data = backend.asarray(p0["W"])
    lin.bias.data = backend.asarray(p0["b"])
    cls = {"sgd": optim.SGD, "gd": optim.GD, "adam": optim.Adam, "adamw": optim.AdamW,
           "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[name]
    opt = cls(lin, **kw)
    # (compile_step: replayed steps before and after, on JAX jitted ones; the loaded
    # optimizer gets a step of its own)
    step = xpdl.compile_step(lin, mse, opt) if via == "compile_step" else None
    for i in range(STEPS):
        if i == 10:
            opt.param_groups[0].update(change)
        if i == 20:
            sd = opt.state_dict()
            if via == "file":
                xpdl.save(opt, tmp_path / "opt.safetensors")
                sd = xpdl.load(tmp_path / "opt.safetensors", xp=backend.xp,
                               device=backend.device)
            opt = cls(lin, **kw)
            opt.load_state_dict(sd)
            for k, v in change.items():
                assert opt.param_groups[0][k] == v and type(opt.param_groups[0][k]) is \
                    type(v), k
            if step is not None:
                step = xpdl.compile_step(lin, mse, opt)
        if step is not None:
            step(X, Y)
            continue
        opt.zero_grad()
        mse(lin(X), Y).backward()
        opt.step()
    tol = 1e-9 if backend.is64 else 2e-3
    np.testing.assert_allclose(backend.to_numpy(lin.weight.data), ref["W"], rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(backend.to_numpy(lin.bias.data), ref["b"], rtol=tol, atol=tol)


def test_settings_in_a_state_dict_are_checked_and_nothing_changes(backend, tmp_path):
    """A state dict whose settings are unknown to the optimizer, or out of range, is
    refused with what is wrong, and the optimizer keeps its settings and state; a state
    dict without settings (written before they were kept) still loads; a schedule is no
    setting a state dict holds."""
    W = Tensor(backend.asarray(np.ones((2, 3))), requires_grad=True)
    opt = optim.SGD([W], lr=0.1, momentum=0.9)
    W.grad = backend.asarray(np.ones((2, 3)))
    opt.step()
    sd = opt.state_dict()
    assert {k: v for k, v in sd.items() if k.startswith("param_groups/")} == {
        "param_groups/lr": 0.1, "param_groups/momentum": 0.9,
        "param_groups/nesterov": False, "param_groups/weight_decay": 0.0}
    before = {k: backend.to_numpy(v).copy() if not isinstance(v, (int, float)) else v
              for k, v in sd.items()}
    for bad, exc, match in [({"param_groups/betas": [0.9, 0.99]}, ValueError,
                             r"settings \['betas'\] that SGD does not have"),
                            ({"param_groups/lr": -1.0}, ValueError,
                             "learning rate must be non-negative"),
                            ({"param_groups/momentum": 0.0, "0/momentum/0": W.data}, ValueError,
                             "state keys differ"),
                            ({"1/step": -3}, ValueError, "non-negative integer")]:
        with pytest.raises(exc, match=match):
            opt.load_state_dict({**sd, **bad})
        after = opt.state_dict()
        assert set(after) == set(before)
        for k, v in after.items():
            if isinstance(v, (int, float)):
                assert v == before[k], k
            else:
                np.testing.assert_array_equal(backend.to_numpy(v), before[k], err_msg=k)
        assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0.9
    # an older state dict: no settings, the optimizer keeps its own
    old = {k: v for k, v in sd.items() if not k.startswith("param_groups/")}
    opt2 = optim.SGD([W], lr=0.3, momentum=0.9)
    opt2.load_state_dict(old)
    assert opt2.param_groups[0]["lr"] == 0.3
    # a schedule is code: not in the state dict, nor in the file
    sched = optim.Adam([W], lr=schedules.exponential_decay(0.1, 0.5, 10))
    assert "param_groups/lr" not in sched.state_dict()
    assert sched.state_dict()["param_groups/betas"] == (0.9, 0.999)
    xpdl.save(sched, tmp_path / "s.safetensors")
    assert "param_groups/lr" not in xpdl.load(tmp_path / "s.safetensors")


def test_param_groups_misuse_is_named_and_nothing_moves(backend):
    W = Tensor(backend.asarray(np.ones((2, 3))), requires_grad=True)
    with pytest.raises(TypeError, match="parameter groups"):
        optim.SGD([{"params": [W], "lr": 0.1}], lr=0.01)
    opt = optim.Adam([W], lr=0.1)
    W.grad = backend.asarray(np.ones((2, 3)))
    opt.step()
    before = backend.to_numpy(W.data).copy()
    state = {k: backend.to_numpy(v).copy() if not isinstance(v, (int, float, tuple)) else v
             for k, v in opt.state.items()}
    g = opt.param_groups[0]
    for bad, exc, match in [({"lr": -1.0}, ValueError, "learning rate must be non-negative"),
                            ({"betas": (0.9, 1.5)}, ValueError, "betas"),
                            ({"lr": "fast"}, TypeError, "learning rate")]:
        saved = dict(g)
        g.update(bad)
        with pytest.raises(exc, match=match):
            opt.step()
        g.clear()
        g.update(saved)
    g["momentum"] = 0.9
    with pytest.raises(ValueError, match="must have the keys"):
        opt.step()
    del g["momentum"]
    g["params"] = [W, W]
    with pytest.raises(ValueError, match="cannot be changed"):
        opt.step()
    g["params"] = saved["params"]
    opt.param_groups.append({"params": [], "lr": 0.1})
    with pytest.raises(ValueError, match="list of one dict"):
        opt.step()
    opt.param_groups.pop()
    np.testing.assert_array_equal(backend.to_numpy(W.data), before)
    for k, v in opt.state.items():
        np.testing.assert_array_equal(v if isinstance(v, int) else backend.to_numpy(v),
                                      state[k])
    opt.step()  # settings as they were: it trains on
    assert not np.array_equal(backend.to_numpy(W.data), before)


# -- add_param_group: parameters added while training, as in PyTorch -----------------------
def _torch_added_later(name, kw, at):
    import torch

    X, Y, p0 = _problem()
    W = torch.tensor(p0["W"], requires_grad=True)
    b = torch.tensor(p0["b"], requires_grad=True)
    V = torch.tensor(np.full((2, 2), 0.3), requires_grad=True)  # trained from step ``at``
    cls = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
           "adagrad": torch.optim.Adagrad}[name]
    opt = cls([W, b], **kw)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for i in range(STEPS):
        if i == at:
            opt.add_param_group({"params": [V]})
            if name == "adagrad" and not opt.state[V]:
                # torch 2.11's Adagrad made its state in __init__ only (a later group's
                # first step: KeyError 'sum'); 2.13 makes it at the first step, like this
                opt.state[V].update(step=torch.tensor(0.0), sum=torch.zeros_like(V))
        opt.zero_grad()
        torch.nn.functional.mse_loss((Xt @ W.T + b) @ V, Yt).backward()
        opt.step()
    return {"W": W.detach().numpy(), "b": b.detach().numpy(), "V": V.detach().numpy()}


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("compiled", [False, True], ids=["step", "compile_step"])
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[0] != "gd"][::2], ids=str)
def test_add_param_group_follows_torch(backend, cfg, compiled):
    """A parameter the optimizer did not have (a layer unfrozen while fine-tuning) added
    with add_param_group at step 12: from then on it is trained from a fresh state (Adam
    counting its own steps from one), through step() and through compile_step (which
    steps eagerly while a parameter gets a gradient the optimizer does not update, and
    replays once it does), as torch.optim after its add_param_group."""
    from xpdl import nn

    name, kw = cfg
    ref = _torch_added_later(name, kw, at=12)
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    lin = nn.Linear(3, 2, rng=0, xp=backend.xp, device=backend.device,
                    dtype=backend.float_dtype)
    lin.weight.data = backend.asarray(p0["W"])
    lin.bias.data = backend.asarray(p0["b"])
    V = Tensor(backend.asarray(np.full((2, 2), 0.3)), requires_grad=True)
    V.requires_grad_(False)  # frozen at first: compile_step replays without it
    cls = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
           "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[name]
    opt = cls(lin, **kw)

    def model(x):
        return lin(x) @ V

    step = xpdl.compile_step(model, mse, opt) if compiled else None
    for i in range(STEPS):
        if i == 12:
            V.requires_grad_(True)
            opt.add_param_group({"params": [V], "lr": kw["lr"]})  # (the same lr: allowed)
            assert opt.param_names == ["weight", "bias", "2"]
            assert opt.param_groups[0]["params"][-1] is V
        if compiled:
            step(X, Y)
        else:
            opt.zero_grad()
            mse(model(X), Y).backward()
            opt.step()
    if compiled:
        assert step.mode == "replay"
    tol = 1e-9 if backend.is64 else 2e-3
    for k, t in (("W", lin.weight), ("b", lin.bias), ("V", V)):
        np.testing.assert_allclose(backend.to_numpy(t.data), ref[k], rtol=tol, atol=tol,
                                   err_msg=k)


def test_add_param_group_misuse_is_named_and_adds_nothing(backend):
    W = Tensor(backend.asarray(np.ones((2, 3))), requires_grad=True)
    V = Tensor(backend.asarray(np.ones(2)), requires_grad=True)
    opt = optim.Adam({"W": W}, lr=0.1)
    before = (opt.param_names, set(opt.state_dict()), len(opt.param_groups[0]["params"]))
    for bad, exc, match in [
            ([V], TypeError, "takes a dict with 'params'"),
            ({"params": [V], "lr": 0.01}, ValueError, r"one parameter group.*\['lr'\] differ"),
            ({"params": [V], "momentum": 0.9}, ValueError, r"Adam has no settings \['momentum'\]"),
            ({"params": [W]}, ValueError, "in the optimizer already"),
            ({"params": {"W": V}}, ValueError, r"names \['W'\] are taken"),
            ({"params": [Tensor(backend.asarray(np.ones(2)))]}, TypeError, "requires_grad")]:
        with pytest.raises(exc, match=match):
            opt.add_param_group(bad)
        assert (opt.param_names, set(opt.state_dict()),
                len(opt.param_groups[0]["params"])) == before
    opt.add_param_group({"params": {"V": V}, "betas": (0.9, 0.999)})  # (the same betas)
    assert opt.param_names == ["W", "V"] and "0/exp_avg/V" in opt.state_dict()


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_optimizer_repr_shows_the_group_as_torch(backend):
    """repr(opt) lists param_groups[0]'s settings as torch.optim's does (it was
    "Adam(2 parameters)"); each line ours prints is one of torch's."""
    import torch

    X, Y, p0 = _problem()
    cases = [("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
             ("adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
             ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, centered=True,
                              weight_decay=0.1))]
    for name, kw in cases:
        ours = {"sgd": optim.SGD, "adam": optim.Adam, "rmsprop": optim.RMSprop}[name](
            {"W": Tensor(backend.asarray(p0["W"]), requires_grad=True)}, **kw)
        theirs = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                  "rmsprop": torch.optim.RMSprop}[name]([torch.tensor(p0["W"])], **kw)
        lines = repr(ours).splitlines()
        assert lines[:2] == repr(theirs).splitlines()[:2] and lines[-1] == ")"
        assert set(lines[2:-1]) <= set(repr(theirs).splitlines()), (lines, repr(theirs))
        assert [ln.split(":")[0].strip() for ln in lines[2:-1]] == sorted(ours.defaults)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_amsgrad_keeps_the_largest_second_moment_as_torch(backend, name, tmp_path):
    """Adam(amsgrad=True) and AdamW(amsgrad=True) (a TypeError before): the state holds
    torch's max_exp_avg_sq, a run saved to a file at step 15 and resumed equals torch's
    40 steps, and the trajectory is not plain Adam's (the maximum matters here)."""
    import torch

    kw = dict(lr=0.05, amsgrad=True)
    ref = _torch_trajectory(name, kw)
    plain = _torch_trajectory(name, dict(lr=0.05))
    assert max(np.abs(ref[k] - plain[k]).max() for k in ref) > 1e-4  # (tol 1e-9 in float64)
    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    ps = {k: Tensor(backend.asarray(v), requires_grad=True) for k, v in p0.items()}
    cls = {"adam": optim.Adam, "adamw": optim.AdamW}[name]
    opt = cls(ps, **kw)
    loss = _loss(X, Y)
    for _ in range(15):
        opt.zero_grad()
        loss(ps["W"], ps["b"]).backward()
        opt.step()
    t = torch.tensor(p0["W"], requires_grad=True)
    tref = getattr(torch.optim, {"adam": "Adam", "adamw": "AdamW"}[name])([t], **kw)
    t.grad = torch.ones_like(t)
    tref.step()
    ours = sorted(k.split("/")[1] for k in opt.state_dict() if k.endswith("/W"))
    assert ours == sorted(set(tref.state_dict()["state"][0]) - {"step"}) == [
        "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    xpdl.save(opt, tmp_path / "opt.safetensors")
    ps = {k: Tensor(backend.asarray(backend.to_numpy(v.data)), requires_grad=True)
          for k, v in ps.items()}
    opt = cls(ps, **kw)
    opt.load_state_dict(xpdl.load(tmp_path / "opt.safetensors", xp=backend.xp,
                                  device=backend.device))
    step = xpdl.compile_step(lambda x: x @ ps["W"].T + ps["b"], mse, opt)
    for _ in range(STEPS - 15):
        step(X, Y)
    tol = 1e-9 if backend.is64 else 2e-3
    for k in ps:
        np.testing.assert_allclose(backend.to_numpy(ps[k].data), ref[k], rtol=tol, atol=tol)
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="amsgrad must be True or False"):
            cls(ps, amsgrad=bad)


@pytest.mark.parametrize("name,kw", [("adam", dict(lr=0.05)),
                                     ("adamw", dict(lr=0.05, weight_decay=0.3)),
                                     ("adam", dict(lr=0.05, amsgrad=True)),
                                     ("sgd", dict(lr=0.05, momentum=0.9)),
                                     ("rmsprop", dict(lr=0.01)),
                                     ("adagrad", dict(lr=0.1))])
def test_flat_stepper_equals_step_bit_for_bit(backend, name, kw):
    """compile_step's flat stepper (parameters as views of one array, the L2 gradient of
    the leading ones added in its pass) against step() on separate arrays with the same
    gradients, 6 steps: the same bits. On torch the fused Adam kernel rounds by an
    element's place in its tensor (vector loop or tail), so a pass over blocks of the flat
    array once gave 1-ulp differences, which moved with the layout (a fit resumed from a
    file, laid out at another step, ended 1 ulp from the long fit)."""
    from xpdl import _namespace as _ns
    from xpdl.optim import _rules

    xp = backend.xp
    if not (backend.name == "numpy" or backend.name.startswith(("torch", "cupy"))):
        pytest.skip("flat steppers are for NumPy, CuPy and torch (others take step())")
    g = np.random.default_rng(0)
    shapes = [(7, 5), (3, 7), (7,), (3,)]  # weights first: the L2 part, 56 elements
    init = [g.normal(size=s) for s in shapes]
    sep = {f"p{i}": Tensor(backend.asarray(a), requires_grad=True) for i, a in enumerate(init)}
    offsets, total = _ns.flat_offsets(xp, shapes, backend.asarray(init[0]).dtype)
    P, G = (xp.zeros(total, dtype=backend.asarray(init[0]).dtype, device=backend.device)
            for _ in range(2))
    views = [xp.reshape(P[off:off + math.prod(s)], s) for s, off in zip(shapes, offsets)]
    flat = {}
    for i, v in enumerate(views):
        v[...] = backend.asarray(init[i])
        flat[f"p{i}"] = Tensor(v, requires_grad=True)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD,
           "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[name]
    o1, o2 = cls(sep, **kw), cls(flat, **kw)
    keys = list(flat)
    stepper = o2.flat_stepper(P, G, keys, shapes, n_l2=offsets[2])
    c = 0.02
    for _ in range(6):
        grads = [g.normal(size=s) for s in shapes]
        for i, (k, gr, off) in enumerate(zip(keys, grads, offsets)):
            gx = backend.asarray(gr)
            sep[k].grad = _rules.add_l2(gx, sep[k].data, c) if i < 2 else gx
            G[off:off + gr.size] = backend.asarray(gr.ravel())
        o1.step()
        stepper(c)
        for k, v in zip(keys, views):
            np.testing.assert_array_equal(backend.to_numpy(v), backend.to_numpy(sep[k].data),
                                          err_msg=k)
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1.keys() == s2.keys()
    for k, v in s1.items():
        if _ns.is_array(v):
            np.testing.assert_array_equal(backend.to_numpy(v), backend.to_numpy(s2[k]),
                                          err_msg=k)
        else:
            assert v == s2[k], k
