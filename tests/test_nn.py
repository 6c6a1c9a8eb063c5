"""Layers: parameters, state dicts, modes, initialisation, moving between backends."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import xpdl
from xpdl import functional as F
from xpdl import nn

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _mlp(backend, rng=0, p=0.0):
    return nn.Sequential(
        nn.Linear(4, 8, rng=rng, xp=backend.xp, device=backend.device,
                  dtype=backend.float_dtype, init="he"),
        nn.ReLU(), nn.Dropout(p, rng=rng),
        nn.Linear(8, 3, rng=rng, xp=backend.xp, device=backend.device,
                  dtype=backend.float_dtype),
    )


def test_named_parameters_and_state_dict(backend):
    m = _mlp(backend)
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias"]
    sd = m.state_dict()
    assert tuple(sd["0.weight"].shape) == (8, 4) and tuple(sd["3.bias"].shape) == (3,)
    for p in m.parameters():
        assert p.requires_grad and p.device == backend.device and p.dtype == backend.float_dtype


def test_forward_matches_numpy_reference(backend):
    m = _mlp(backend)
    x_h = np.random.default_rng(0).normal(size=(5, 4))
    out = backend.to_numpy(m(backend.asarray(x_h)))
    sd = {k: backend.to_numpy(v) for k, v in m.state_dict().items()}
    h = np.maximum(x_h @ sd["0.weight"].T + sd["0.bias"], 0)
    ref = h @ sd["3.weight"].T + sd["3.bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-6 if backend.is64 else 1e-4, atol=1e-6)


def test_backward_through_module_matches_finite_differences(backend):
    m = nn.Sequential(nn.Linear(3, 5, rng=1, xp=backend.xp, device=backend.device,
                                dtype=backend.float_dtype),
                      nn.Tanh(), nn.Linear(5, 2, rng=2, xp=backend.xp, device=backend.device,
                                           dtype=backend.float_dtype), nn.Sigmoid())
    x = backend.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    err = xpdl.check_grad(lambda w: _with_weight(m, w, x), m[0].weight.data)
    assert err < (1e-6 if backend.is64 else 3e-2)


def _with_weight(m, w, x):
    import xpdl.functional as F

    h = F.tanh(F.linear(x, w, m[0].bias))
    return F.sigmoid(m[2](h)).sum()


def test_init_is_seeded_same_on_every_backend_and_documented_bounds(backend):
    a = nn.Linear(50, 40, rng=3, xp=backend.xp, device=backend.device, init="he")
    b = nn.Linear(50, 40, rng=3, init="he")  # NumPy
    np.testing.assert_array_equal(backend.to_numpy(a.weight.data), b.weight.data)
    w = b.weight.data
    assert np.abs(w).max() <= np.sqrt(6 / 50) and np.abs(w).max() > 0.9 * np.sqrt(6 / 50)
    g = nn.Linear(50, 40, rng=3).weight.data
    assert np.abs(g).max() <= np.sqrt(6 / 90)
    np.testing.assert_array_equal(backend.to_numpy(a.bias.data), np.zeros(40))
    assert a.weight.dtype == backend.xp.float32  # float32 by default


def test_load_state_dict_copies_and_validates(backend):
    m1, m2 = _mlp(backend, rng=1), _mlp(backend, rng=2)
    sd = m1.state_dict()
    m2.load_state_dict(sd)
    for (_, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        np.testing.assert_array_equal(backend.to_numpy(a.data), backend.to_numpy(b.data))
        assert a.data is not b.data
    with pytest.raises(ValueError, match="missing keys"):
        m2.load_state_dict({"0.weight": sd["0.weight"]})
    bad = dict(sd)
    bad["0.bias"] = backend.asarray(np.zeros(7))
    with pytest.raises(ValueError, match="shape"):
        m2.load_state_dict(bad)
    # a bad last entry leaves every parameter as it was (nothing loaded half-way)
    m3 = _mlp(backend, rng=3)
    before = {k: backend.to_numpy(v).copy() for k, v in m3.state_dict().items()}
    last = list(sd)[-1]
    bad = {k: backend.asarray(np.zeros(9)) if k == last else v for k, v in sd.items()}
    with pytest.raises(ValueError, match=f"{last} has shape"):
        m3.load_state_dict(bad)
    for k, v in m3.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(v), before[k])
    # a value that is no array (a list: was AttributeError 'list' has no attribute 'shape')
    bad = {k: backend.to_numpy(v).tolist() if k == last else v for k, v in sd.items()}
    with pytest.raises(TypeError, match=f"{last} must be an array, got list"):
        m3.load_state_dict(bad)
    for k, v in m3.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(v), before[k])


def test_to_a_dtype_that_is_not_floating_is_refused(backend):
    """``Module.to(dtype=int32)`` made integer parameters that require grad (torch's
    Module.to refuses it too); now a TypeError, and the module stays as it was."""
    m = _mlp(backend, rng=1)
    before = [(p, p.data, p.dtype) for p in m.parameters()]
    for dt in (backend.xp.int32, backend.xp.bool, "int64"):
        with pytest.raises(TypeError, match="Module.to needs a floating dtype"):
            m.to(dtype=dt)
    after = m.parameters()
    assert len(after) == len(before)
    assert all(p is q and p.data is d and p.dtype == dt for p, (q, d, dt) in zip(after, before))
    m.to(dtype=backend.xp.float32)
    assert all(p.dtype == backend.xp.float32 for p in m.parameters())


def test_dropout_train_and_eval(backend):
    m = _mlp(backend, p=0.5)
    x = backend.asarray(np.ones((64, 4)))
    m.eval()
    a = backend.to_numpy(m(x))
    b = backend.to_numpy(m(x))
    np.testing.assert_array_equal(a, b)
    m.train()
    assert m[2].training
    c = backend.to_numpy(m(x))
    assert not np.allclose(a, c)
    with pytest.raises(TypeError, match="True or False"):  # not a truthy string's True
        m.train("no")
    assert all(layer.training for layer in m)


def test_module_to_moves_parameters(backend):
    m = _mlp(backend)
    ref = {k: backend.to_numpy(v) for k, v in m.state_dict().items()}
    m.to(xp=np)
    for k, v in m.state_dict().items():
        assert isinstance(v, np.ndarray)
        np.testing.assert_array_equal(v, ref[k])
    out = m(np.ones((2, 4), dtype=ref["0.weight"].dtype))
    assert isinstance(out, xpdl.Tensor) and isinstance(out.data, np.ndarray)
    m.to(xp=backend.xp, device=backend.device)
    assert all(p.device == backend.device for p in m.parameters())
    m.to(dtype="float32")
    assert all(p.dtype == backend.xp.float32 for p in m.parameters())


def test_activation_layers_match_functional(backend):
    import xpdl.functional as F

    x = backend.asarray(np.linspace(-3, 3, 12).reshape(3, 4))
    for layer, fn in [(nn.ReLU(), F.relu), (nn.Sigmoid(), F.sigmoid), (nn.Tanh(), F.tanh),
                      (nn.LeakyReLU(0.2), lambda v: F.leaky_relu(v, 0.2)),
                      (nn.Softmax(), F.softmax), (nn.LogSoftmax(), F.log_softmax),
                      (nn.Identity(), lambda v: v)]:
        np.testing.assert_array_equal(backend.to_numpy(layer(x)), backend.to_numpy(fn(x)))


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("kind", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("spelling", ["dim", "axis", "positional"])
def test_softmax_layers_take_torchs_dim_and_match_torch(backend, kind, spelling):
    """nn.Softmax(dim=0) and nn.LogSoftmax(dim=1) as written for PyTorch (dim was a
    TypeError; there was no LogSoftmax): values and input gradients equal torch's along
    either axis, and F.softmax/F.log_softmax take dim= too."""
    import torch

    g = np.random.default_rng(0)
    xh = g.normal(size=(5, 4)) * 3
    wh = g.normal(size=(5, 4))
    for ax in (0, 1):
        kw = {"dim": {"dim": ax}, "axis": {"axis": ax}, "positional": {}}[spelling]
        layer = getattr(nn, kind)(ax) if spelling == "positional" else getattr(nn, kind)(**kw)
        assert layer.axis == ax and repr(layer) == f"{kind}(axis={ax})"
        x = xpdl.Tensor(backend.asarray(xh), requires_grad=True)
        out = layer(x)
        (out * backend.asarray(wh)).sum().backward()
        xt = torch.tensor(xh, requires_grad=True)
        ref = getattr(torch.nn, kind)(dim=ax)(xt)
        (ref * torch.tensor(wh)).sum().backward()
        tol = 1e-12 if backend.is64 else 2e-5
        np.testing.assert_allclose(backend.to_numpy(out.data), ref.detach().numpy(),
                                   rtol=tol, atol=tol)
        np.testing.assert_allclose(backend.to_numpy(x.grad), xt.grad.numpy(), rtol=tol,
                                   atol=tol)
        fn = {"Softmax": F.softmax, "LogSoftmax": F.log_softmax}[kind]
        np.testing.assert_array_equal(backend.to_numpy(fn(backend.asarray(xh), dim=ax)),
                                      backend.to_numpy(out.data))
    with pytest.raises(TypeError, match="axis= or PyTorch's dim=, not both"):
        getattr(nn, kind)(axis=0, dim=1)
    fn = {"Softmax": F.softmax, "LogSoftmax": F.log_softmax}[kind]
    with pytest.raises(TypeError, match="axis= or PyTorch's dim=, not both"):
        fn(backend.asarray(xh), 0, dim=1)


def test_bad_construction():
    with pytest.raises(ValueError, match="positive"):
        nn.Linear(0, 3)
    for sizes in ((2.5, 3), (3, True), ("3", 2)):  # 2.5 and True were truncated to ints
        with pytest.raises(TypeError, match="sizes must be ints"):
            nn.Linear(*sizes)
    assert nn.Linear(np.int64(2), 3, rng=0).weight.shape == (3, 2)
    with pytest.raises(ValueError, match="init"):
        nn.Linear(2, 3, init="lecun")
    with pytest.raises(TypeError, match="Modules"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)
    for p in ("0.5", None, True):  # "0.5" was "'<=' not supported"; True was p = 1
        with pytest.raises(TypeError, match="dropout probability must be a number"):
            nn.Dropout(p)
    assert nn.Dropout(np.float32(0.25)).p == 0.25 and type(nn.Dropout(np.float32(0.25)).p) is float
    for slope in (float("nan"), float("inf")):  # accepted; every negative input became NaN
        with pytest.raises(ValueError, match="negative_slope must be finite"):
            nn.LeakyReLU(slope)
    for slope in ("0.1", True, None):
        with pytest.raises(TypeError, match="negative_slope must be a number"):
            nn.LeakyReLU(slope)
    assert nn.LeakyReLU(np.float32(0.5)).negative_slope == 0.5


def test_leaky_relu_refuses_a_slope_that_is_no_number(backend):
    import xpdl.functional as F

    x = backend.asarray(np.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match="negative_slope must be finite"):
        F.leaky_relu(x, float("nan"))
    with pytest.raises(TypeError, match="negative_slope must be a number"):
        F.leaky_relu(x, "0.1")
    np.testing.assert_array_equal(backend.to_numpy(F.leaky_relu(x, -2)), [2.0, 2.0])


def test_relu_keeps_the_dtype_and_nan(backend):
    # torch.relu's contract: integers stay integers; NaN propagates
    import xpdl.functional as F

    xi = backend.asarray(np.array([[3, -2], [0, 7]]), dtype=backend.xp.int64)
    out = F.relu(xi)
    assert out.dtype == backend.xp.int64
    np.testing.assert_array_equal(backend.to_numpy(out), [[3, 0], [0, 7]])
    xf = backend.asarray(np.array([np.nan, -1.5, 2.0, -0.0, np.inf, -np.inf]))
    got = backend.to_numpy(F.relu(xf))
    ref = np.maximum(np.array([np.nan, -1.5, 2.0, -0.0, np.inf, -np.inf]), 0.0)
    np.testing.assert_array_equal(got, ref.astype(got.dtype))
    assert backend.to_numpy(xf)[1] == -1.5  # the input is not written


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_linear_layer_matches_torch(backend):
    import torch

    lin = nn.Linear(4, 3, rng=0, xp=backend.xp, device=backend.device,
                    dtype=backend.float_dtype)
    tl = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(backend.to_numpy(lin.weight.data), dtype=torch.float64))
        tl.bias.copy_(torch.tensor(backend.to_numpy(lin.bias.data), dtype=torch.float64))
    x_h = np.random.default_rng(0).normal(size=(6, 4))
    if not backend.is64:
        x_h = x_h.astype(np.float32).astype(np.float64)
    out = lin(backend.asarray(x_h))
    (out * out).sum().backward()
    tout = tl(torch.tensor(x_h))
    (tout * tout).sum().backward()
    tol = backend.rtol * 10
    np.testing.assert_allclose(backend.to_numpy(out), tout.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(lin.weight.grad), tl.weight.grad.numpy(),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(lin.bias.grad), tl.bias.grad.numpy(),
                               rtol=tol, atol=tol)


def test_tied_weights_are_one_parameter(backend):
    """A weight shared by two layers (tied encoder/decoder) is listed once, under its first
    name, as in PyTorch: an optimizer steps it once with the sum of both uses' gradients
    (it used to be listed twice and stepped twice). The gradient is checked against
    central finite differences of the loss in the shared weight."""
    from xpdl import functional as F
    from xpdl import losses, optim

    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(4, 3, rng=0, **kw)
            self.dec = nn.Linear(3, 4, rng=1, **kw)
            self.dec.weight = self.enc.weight  # used transposed in forward

        def forward(self, x):
            return F.tanh(self.enc(x)) @ self.enc.weight + self.dec.bias

    m = Tied()
    assert [n for n, _ in m.named_parameters()] == ["enc.weight", "enc.bias", "dec.bias"]
    Xh = np.random.default_rng(0).normal(size=(8, 4))
    X = backend.asarray(Xh)

    def loss_of(Wh):
        saved = m.enc.weight.data
        m.enc.weight.data = backend.asarray(Wh)
        try:
            return float(losses.mse(m(xpdl.Tensor(X)), X).data)
        finally:
            m.enc.weight.data = saved

    W0 = backend.to_numpy(m.enc.weight.data).copy()
    eps = 1e-6 if backend.is64 else 1e-2
    fd = np.zeros_like(W0)
    for idx in np.ndindex(*W0.shape):
        e = np.zeros_like(W0)
        e[idx] = eps
        fd[idx] = (loss_of(W0 + e) - loss_of(W0 - e)) / (2 * eps)
    opt = optim.SGD(m, lr=0.1)
    losses.mse(m(xpdl.Tensor(X)), X).backward()
    opt.step()
    tol = dict(rtol=1e-6, atol=1e-9) if backend.is64 else dict(rtol=5e-2, atol=5e-3)
    np.testing.assert_allclose(backend.to_numpy(m.enc.weight.data), W0 - 0.1 * fd, **tol)


def test_linear_names_a_bias_of_the_wrong_shape(backend):
    """A bias of 5 for 4 outputs reached NumPy's 'operands could not be broadcast together
    with shapes (2,4) (5,) (2,4)' (or broadcast silently, for a (1, 4) or (2, 4) one)."""
    import xpdl.functional as F

    x, W = backend.asarray(np.ones((2, 3))), backend.asarray(np.ones((4, 3)))
    for shape in ((5,), (1, 4), (2, 4), ()):
        with pytest.raises(ValueError, match=r"linear bias has shape .* it must be \(4,\)"):
            F.linear(x, W, backend.asarray(np.ones(shape)))
    out = F.linear(x, W, backend.asarray(np.arange(4.0)))
    np.testing.assert_array_equal(backend.to_numpy(out), [[3.0, 4.0, 5.0, 6.0]] * 2)
    # a 0-d input was "tuple index out of range"; a 1-d one is one sample, as in torch
    with pytest.raises(ValueError, match="linear input must have at least 1 dimension"):
        F.linear(backend.asarray(np.array(1.0)), W)
    np.testing.assert_array_equal(backend.to_numpy(F.linear(x[0, ...], W)), [3.0] * 4)


def test_deleting_an_attribute_unregisters_it(backend):
    # `del model.head` left the layer in named_parameters(), state_dict() and the
    # optimizer's list; torch unregisters it
    from xpdl import Tensor, optim

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            kw = dict(rng=0, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
            self.body = nn.Linear(4, 3, **kw)
            self.head = nn.Linear(3, 2, **kw)
            self.scale = Tensor(backend.asarray(np.ones(1)), requires_grad=True)

        def forward(self, x):
            return self.body(x) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "body.weight", "body.bias",
                                                        "head.weight", "head.bias"]
    del net.head
    del net.scale
    assert [n for n, _ in net.named_parameters()] == ["body.weight", "body.bias"]
    assert list(net.state_dict()) == ["body.weight", "body.bias"]
    assert len(optim.SGD(net, lr=0.1)._params) == 2
    assert not hasattr(net, "head")
    with pytest.raises(AttributeError):
        del net.head


def test_a_slice_of_a_sequential_is_a_sequential_of_the_same_layers(backend, tmp_path):
    # (it was a plain list, which cannot be called)
    m = _mlp(backend)
    head = m[:-1]
    assert isinstance(head, nn.Sequential) and len(head) == len(m) - 1
    assert all(a is b for a, b in zip(head, list(m)[:-1]))
    assert list(head.state_dict()) == ["0.weight", "0.bias"]  # numbered from 0
    tail = m[2:]
    assert list(tail.state_dict()) == ["1.weight", "1.bias"]
    xpdl.save(tail, tmp_path / "tail.safetensors")  # (the numbering a file rebuilds)
    back = xpdl.load(tmp_path / "tail.safetensors", xp=backend.xp, device=backend.device)
    for k, v in tail.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(back.state_dict()[k]),
                                      backend.to_numpy(v))
    x = backend.asarray(np.random.default_rng(0).normal(size=(5, 4)))
    h = x
    for layer in list(m)[:-1]:
        h = layer(h)
    np.testing.assert_array_equal(backend.to_numpy(head(x)), backend.to_numpy(h))
    np.testing.assert_array_equal(backend.to_numpy(m[len(m) - 1:](head(x))),
                                  backend.to_numpy(m(x)))


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("compiled", [False, True], ids=["step", "compile_step"])
def test_a_frozen_layer_trains_like_torch(backend, compiled):
    """``requires_grad_(False)`` on the first layer: it keeps its weights, the optimizer
    (made before the freeze, with every parameter) skips it, and the other layer follows
    torch.optim.Adam step for step; unfreezing makes it train again."""
    import torch

    from xpdl import losses, optim

    m = _mlp(backend)
    tm = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                             torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for (_, p), tp in zip(m.named_parameters(), tm.parameters()):
            tp.copy_(torch.tensor(backend.to_numpy(p.data), dtype=torch.float64))
    g = np.random.default_rng(1)
    X_h, y_h = g.normal(size=(16, 4)), g.integers(0, 3, 16)
    if not backend.is64:
        X_h = X_h.astype(np.float32).astype(np.float64)
    opt = optim.Adam(m, lr=0.05)
    topt = torch.optim.Adam(tm.parameters(), lr=0.05)
    assert m[0].requires_grad_(False) is m[0]
    tm[0].requires_grad_(False)
    first = backend.to_numpy(m[0].weight.data).copy()
    X, y = backend.asarray(X_h), backend.asarray(y_h)
    step = xpdl.compile_step(m, losses.cross_entropy, opt) if compiled else None
    for i in range(12):
        if i == 8:  # unfreeze: both train again, the first layer from its first step
            m.requires_grad_(True)
            tm.requires_grad_(True)
        if compiled:
            step(X, y)
        else:
            opt.zero_grad()
            losses.cross_entropy(m(X), y).backward()
            opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tm(torch.tensor(X_h)), torch.tensor(y_h)).backward()
        topt.step()
        if i == 7:
            np.testing.assert_array_equal(backend.to_numpy(m[0].weight.data), first)
    tol = backend.rtol * 100
    for (name, p), tp in zip(m.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(backend.to_numpy(p.data), tp.detach().numpy(), rtol=tol,
                                   atol=tol, err_msg=name)


def test_requires_grad_on_tensors(backend):
    t = xpdl.Tensor(backend.asarray(np.ones(3)))
    assert t.requires_grad_() is t and t.requires_grad
    with pytest.raises(ValueError, match="leaf tensors only"):
        (t * 2.0).requires_grad_(False)
    i = xpdl.Tensor(backend.asarray(np.arange(3)))
    with pytest.raises(TypeError, match="only floating-point"):
        i.requires_grad_()
    assert not i.requires_grad_(False).requires_grad


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_apply_visits_modules_in_torchs_order_and_can_initialise(backend):
    import torch

    m = nn.Sequential(nn.Linear(3, 4, rng=0, xp=backend.xp, device=backend.device),
                      nn.Sequential(nn.ReLU(), nn.Linear(4, 2, rng=0, xp=backend.xp,
                                                         device=backend.device)))
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4),
                             torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    seen, tseen = [], []
    assert m.apply(lambda mod: seen.append(type(mod).__name__)) is m
    tm.apply(lambda mod: tseen.append(type(mod).__name__))
    assert seen == tseen  # children depth first, then the module itself

    def init(mod):  # the usual custom initialisation
        if isinstance(mod, nn.Linear):
            mod.weight.data = mod.weight.data * 0.0 + 0.5

    m.apply(init)
    for name, p in m.named_parameters():
        if name.endswith("weight"):
            assert np.all(backend.to_numpy(p.data) == 0.5), name


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_named_modules_and_children_are_torchs(backend):
    import torch

    shared = nn.ReLU()
    m = nn.Sequential(nn.Linear(3, 4, rng=0, xp=backend.xp, device=backend.device), shared,
                      nn.Sequential(shared, nn.Linear(4, 2, rng=0, xp=backend.xp,
                                                      device=backend.device)))
    tshared = torch.nn.ReLU()
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), tshared,
                             torch.nn.Sequential(tshared, torch.nn.Linear(4, 2)))

    def names(pairs):
        return [(n, type(x).__name__) for n, x in pairs]

    assert names(m.named_modules()) == names(tm.named_modules())
    assert names(m.named_modules("net")) == names(tm.named_modules(prefix="net"))
    assert names(m.named_children()) == names(tm.named_children())
    assert [type(x).__name__ for x in m.modules()] == [type(x).__name__ for x in tm.modules()]


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("max_norm,norm_type", [(0.5, 2.0), (1e3, 2.0), (0.5, float("inf")),
                                               (0.5, "inf"), (0.5, 1), (0.5, 3.0),
                                               (1e3, 0.5)])
def test_clip_grad_norm_matches_torch(backend, max_norm, norm_type):
    import torch

    m = _mlp(backend)
    tm = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                             torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for (_, p), tp in zip(m.named_parameters(), tm.parameters()):
            tp.copy_(torch.tensor(backend.to_numpy(p.data), dtype=torch.float64))
    X_h = np.random.default_rng(2).normal(size=(5, 4))
    if not backend.is64:
        X_h = X_h.astype(np.float32).astype(np.float64)
    (m(backend.asarray(X_h)) ** 2).sum().backward()
    (tm(torch.tensor(X_h)) ** 2).sum().backward()
    m[0].bias.grad = None  # left out, as torch leaves out a parameter without a gradient
    tm[0].bias.grad = None
    norm = nn.clip_grad_norm_(m, max_norm, norm_type=norm_type)
    tnorm = torch.nn.utils.clip_grad_norm_(tm.parameters(), max_norm, norm_type=norm_type)
    tol = backend.rtol * 10
    np.testing.assert_allclose(float(backend.to_numpy(norm)), float(tnorm), rtol=tol)
    for (name, p), tp in zip(m.named_parameters(), tm.parameters()):
        if tp.grad is None:
            assert p.grad is None, name
        else:
            np.testing.assert_allclose(backend.to_numpy(p.grad), tp.grad.numpy(), rtol=tol,
                                       atol=tol, err_msg=name)


def test_clip_grad_norm_edges(backend):
    m = _mlp(backend)
    zero = nn.clip_grad_norm_(m, 1.0)  # no gradients yet: a zero, as torch gives
    assert float(backend.to_numpy(zero)) == 0.0
    assert nn.clip_grad_norm_([], 1.0) == 0.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_norm must be a positive number"):
            nn.clip_grad_norm_(m, bad)
    for bad in ("1", True, None):
        with pytest.raises(TypeError, match="max_norm must be a number"):
            nn.clip_grad_norm_(m, bad)
    for bad in (0, -2.0, float("nan"), float("-inf")):
        with pytest.raises(ValueError, match="norm_type must be positive or inf"):
            nn.clip_grad_norm_(m, 1.0, norm_type=bad)
    for bad in ("two", True, None):
        with pytest.raises(TypeError, match="norm_type must be a number or 'inf'"):
            nn.clip_grad_norm_(m, 1.0, norm_type=bad)
    with pytest.raises(TypeError, match="error_if_nonfinite must be True or False"):
        nn.clip_grad_norm_(m, 1.0, error_if_nonfinite="yes")


@pytest.mark.parametrize("norm_type", [2.0, float("inf"), 1.0])
def test_clip_grad_norm_nonfinite(backend, norm_type):
    """A NaN or infinite gradient: with error_if_nonfinite, torch's RuntimeError and the
    gradients left as they were; without, the gradients scaled by the non-finite norm, as
    torch scales them."""
    for bad in (float("nan"), float("inf")):
        m = _mlp(backend)
        (m(backend.asarray(np.ones((2, 4)))) ** 2).sum().backward()
        g = backend.to_numpy(m[0].weight.grad).copy()
        g[0, 0] = bad
        m[0].weight.grad = backend.asarray(g)
        kept = [backend.to_numpy(p.grad) for p in m.parameters()]
        with pytest.raises(RuntimeError, match="non-finite"):
            nn.clip_grad_norm_(m, 1.0, norm_type=norm_type, error_if_nonfinite=True)
        for p, k in zip(m.parameters(), kept):
            np.testing.assert_array_equal(backend.to_numpy(p.grad), k)
        with np.errstate(invalid="ignore"):  # (NumPy warns of inf * 0; torch does not)
            norm = nn.clip_grad_norm_(m, 1.0, norm_type=norm_type, foreach=True)
        assert np.isnan(float(backend.to_numpy(norm))) == np.isnan(bad)
        other = backend.to_numpy(m[3].weight.grad)
        if np.isnan(bad):  # everything NaN
            assert np.isnan(other).all()
        else:  # scaled by 1 / inf: zeros, and inf * 0 = NaN where the inf was
            np.testing.assert_array_equal(other, 0.0)
            assert np.isnan(backend.to_numpy(m[0].weight.grad)[0, 0])


def _torch_copy(ours, theirs, backend):
    import torch

    with torch.no_grad():
        for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert name == tname
            tp.copy_(torch.tensor(backend.to_numpy(p.data), dtype=torch.float64))


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_module_list_model_trains_as_torch(backend):
    """A model holding its layers in a ModuleList (a varying depth) and a head added with
    add_module: parameters registered under torch's names, and 20 compile_step Adam steps
    equal torch's (a plain list registered nothing, and add_module did not exist)."""
    import torch

    widths = [4, 6, 5, 3]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList()
            for a, b in zip(widths[:-2], widths[1:-1]):
                self.layers.append(nn.Linear(a, b, rng=0, xp=backend.xp,
                                             device=backend.device, dtype=backend.float_dtype))
            self.add_module("head", nn.Linear(widths[-2], widths[-1], rng=1, xp=backend.xp,
                                              device=backend.device,
                                              dtype=backend.float_dtype))

        def forward(self, x):
            for layer in self.layers:
                x = F.tanh(layer(x))
            return self.head(x)

    class TNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in
                                              zip(widths[:-2], widths[1:-1]))
            self.add_module("head", torch.nn.Linear(widths[-2], widths[-1]))

        def forward(self, x):
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return self.head(x)

    net, tnet = Net(), TNet().double()
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in tnet.named_parameters()]
    _torch_copy(net, tnet, backend)
    g = np.random.default_rng(3)
    X = g.normal(size=(16, 4))
    if not backend.is64:
        X = X.astype(np.float32).astype(np.float64)
    y = g.integers(0, 3, 16)
    step = xpdl.compile_step(net, xpdl.losses.cross_entropy, xpdl.optim.Adam(net, lr=0.05))
    topt = torch.optim.Adam(tnet.parameters(), lr=0.05)
    for _ in range(20):
        step(backend.asarray(X), backend.asarray(y))
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.tensor(X)), torch.tensor(y)).backward()
        topt.step()
    tol = 1e-9 if backend.is64 else 2e-3
    for (name, p), (_, tp) in zip(net.named_parameters(), tnet.named_parameters()):
        np.testing.assert_allclose(backend.to_numpy(p.data), tp.detach().numpy(), rtol=tol,
                                   atol=tol, err_msg=name)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_container_edits_name_parameters_as_torch(backend):
    """append, insert, item assignment, del and slices of Sequential and ModuleList give
    torch's parameter names (renumbered after an insert or del, as torch's containers)."""
    import torch

    def lin(a, b):
        return nn.Linear(a, b, rng=0, xp=backend.xp, device=backend.device,
                         dtype=backend.float_dtype)

    for ours, theirs in [(nn.Sequential(lin(2, 3), nn.ReLU()),
                          torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())),
                         (nn.ModuleList([lin(2, 3), nn.ReLU()]),
                          torch.nn.ModuleList([torch.nn.Linear(2, 3), torch.nn.ReLU()]))]:
        assert ours.append(lin(3, 4)) is ours
        theirs.append(torch.nn.Linear(3, 4))
        ours.insert(1, lin(3, 3))
        theirs.insert(1, torch.nn.Linear(3, 3))
        ours.extend([nn.Tanh(), lin(4, 1)])
        theirs.extend([torch.nn.Tanh(), torch.nn.Linear(4, 1)])
        ours[0] = lin(2, 3)
        theirs[0] = torch.nn.Linear(2, 3)
        del ours[2]
        del theirs[2]
        del ours[-2]
        del theirs[-2]
        assert [n for n, _ in ours.named_parameters()] == \
            [n for n, _ in theirs.named_parameters()]
        assert len(ours) == len(theirs)
        assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
        assert type(ours[1:]) is type(ours)
        with pytest.raises(IndexError, match="out of range"):
            ours[len(ours)]
        with pytest.raises(TypeError, match="takes Modules"):
            ours.append(np.ones(2))
        with pytest.raises(TypeError, match="indices must be integers"):
            ours["0"]
    seq = nn.Sequential(lin(2, 3), nn.ReLU()).append(lin(3, 1))
    out = seq(backend.asarray(np.ones((5, 2))))
    assert tuple(out.shape) == (5, 1)
    with pytest.raises(NotImplementedError, match="ModuleList is not called"):
        nn.ModuleList([lin(2, 3)])(backend.asarray(np.ones((5, 2))))


def test_add_module_and_register_parameter(backend):
    m = nn.Module()
    m.add_module("enc", nn.Linear(2, 3, rng=0, xp=backend.xp, device=backend.device,
                                  dtype=backend.float_dtype))
    w = nn.parameter(backend.asarray(np.ones((3,))))
    m.register_parameter("scale", w)
    assert [n for n, _ in m.named_parameters()] == ["scale", "enc.weight", "enc.bias"]
    m.register_parameter("scale", None)
    m.add_module("enc", None)
    assert m.named_parameters() == []
    for bad in ("", "a.b", 3):
        with pytest.raises(ValueError, match="name must be a non-empty string"):
            m.add_module(bad, nn.ReLU())
        with pytest.raises(ValueError, match="name must be a non-empty string"):
            m.register_parameter(bad, w)
    with pytest.raises(TypeError, match="add_module takes a Module"):
        m.add_module("x", np.ones(2))
    with pytest.raises(TypeError, match="requires_grad=True"):
        m.register_parameter("x", xpdl.Tensor(backend.asarray(np.ones(2))))


def test_a_layer_assigned_again_keeps_its_place(backend):
    """Replacing a layer (model.body = ..., seq[0] = ...) keeps the order of layers and
    parameters, as PyTorch does: it moved to the end, so a Sequential ran the new first
    layer last (a shape error or a wrong model) and names changed order."""
    def lin(a, b, seed=0):
        return nn.Linear(a, b, rng=seed, xp=backend.xp, device=backend.device,
                         dtype=backend.float_dtype)

    seq = nn.Sequential(lin(2, 3), nn.ReLU(), lin(3, 1))
    seq[0] = lin(2, 3, seed=5)
    x = backend.asarray(np.ones((4, 2)))
    W0, b0 = backend.to_numpy(seq[0].weight.data), backend.to_numpy(seq[0].bias.data)
    W2, b2 = backend.to_numpy(seq[2].weight.data), backend.to_numpy(seq[2].bias.data)
    want = np.maximum(np.ones((4, 2)) @ W0.T + b0, 0) @ W2.T + b2
    np.testing.assert_allclose(backend.to_numpy(seq(x)), want, rtol=backend.rtol * 10)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                      "2.bias"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = lin(2, 3)
            self.scale = nn.parameter(backend.asarray(np.ones(1)))
            self.head = lin(3, 1)

    net = Net()
    net.body = lin(2, 3, seed=7)
    net.scale = nn.parameter(backend.asarray(np.ones(1)))
    assert [n for n, _ in net.named_parameters()] == ["scale", "body.weight", "body.bias",
                                                      "head.weight", "head.bias"]
    assert [n for n, _ in net.named_children()] == ["body", "head"]


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_load_state_dict_reports_keys_as_torch(backend):
    """``missing, unexpected = model.load_state_dict(sd, strict=False)``: torch's named
    tuple (it returned the module, which a 2-layer Sequential unpacked into its layers)."""
    import torch

    m = _mlp(backend, rng=1)
    tm = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.0),
                             torch.nn.Linear(8, 3))
    sd = m.state_dict()
    part = {k: v for k, v in sd.items() if k != "0.bias"}
    part["extra.weight"] = sd["0.bias"]
    tpart = {k: torch.zeros(tuple(v.shape)) for k, v in part.items()}
    res, tres = m.load_state_dict(part, strict=False), tm.load_state_dict(tpart, strict=False)
    assert (res.missing_keys, res.unexpected_keys) == (tres.missing_keys,
                                                       tres.unexpected_keys)
    missing, unexpected = res
    assert (missing, unexpected) == (["0.bias"], ["extra.weight"])
    assert tuple(m.load_state_dict(sd)) == ([], [])


def _torch_pair(backend, xh):
    import torch

    x = xpdl.Tensor(backend.asarray(xh), requires_grad=True)
    return x, torch.tensor(xh, requires_grad=True)


def _close(backend, a, b):
    tol = 1e-12 if backend.is64 else 2e-5
    np.testing.assert_allclose(backend.to_numpy(a), b.detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name,kw", [
    ("MSELoss", {}), ("L1Loss", {}), ("HuberLoss", {}), ("HuberLoss", {"delta": 0.3}),
    ("BCELoss", {}), ("BCEWithLogitsLoss", {}), ("CrossEntropyLoss", {}),
    ("CrossEntropyLoss", {"probs": True})])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_modules_equal_torchs(backend, name, kw, reduction):
    """nn.MSELoss() and the rest, as written for PyTorch (they did not exist): values and
    the input's gradient equal torch.nn's for each reduction; repr as torch's."""
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(3)
    kw = dict(kw)
    probs = kw.pop("probs", False)
    xh = g.normal(size=(6, 4)) * 2
    if name == "CrossEntropyLoss":
        th = g.dirichlet(np.ones(4), size=6) if probs else g.integers(0, 4, 6)
    elif name.startswith("BCE"):
        th = g.uniform(0, 1, size=(6, 4))
    else:
        th = g.normal(size=(6, 4))
    if name == "BCELoss":
        xh = 1 / (1 + np.exp(-xh))
    x, xt = _torch_pair(backend, xh)
    t = backend.asarray(th, dtype=backend.xp.int64 if th.dtype.kind == "i" else None)
    mine = getattr(nn, name)(reduction=reduction, **kw)
    ref_mod = getattr(torch.nn, name)(reduction=reduction, **kw)
    assert repr(mine) == repr(ref_mod) == f"{name}()"
    out, ref = mine(x, t), ref_mod(xt, torch.tensor(th))
    wh = g.normal(size=tuple(ref.shape))
    (out * backend.asarray(wh)).sum().backward()
    (ref * torch.tensor(wh)).sum().backward()
    _close(backend, out.data, ref)
    _close(backend, x.grad, xt.grad)
    # plain arrays in, a plain array out (as the functions in xpdl.losses)
    _close(backend, mine(backend.asarray(xh), t), ref)


def test_loss_modules_check_their_settings():
    for bad, err in (("avg", ValueError), (None, TypeError)):
        with pytest.raises(err, match="reduction must be one of"):
            nn.MSELoss(reduction=bad)
    with pytest.raises(ValueError, match="delta must be positive"):
        nn.HuberLoss(delta=0)
    with pytest.raises(TypeError, match="delta must be a number"):
        nn.HuberLoss(delta="1")
    assert nn.utils.clip_grad_norm_ is nn.clip_grad_norm_


def test_a_loss_module_trains_through_compile_step_as_torch(backend):
    """compile_step(model, nn.CrossEntropyLoss(), opt), PyTorch's idiom, with Flatten and
    Softplus layers: 6 steps equal torch.optim's (images of shape (n, 2, 3))."""
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(4)
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    m = nn.Sequential(nn.Flatten(), nn.Linear(6, 5, rng=0, **kw), nn.Softplus(beta=2.0),
                      nn.Linear(5, 3, rng=1, **kw))
    tm = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5).double(),
                             torch.nn.Softplus(beta=2.0), torch.nn.Linear(5, 3).double())
    with torch.no_grad():
        for p, q in zip(m.parameters(), tm.parameters()):
            q.copy_(torch.tensor(backend.to_numpy(p.data)))
    step = xpdl.compile_step(m, nn.CrossEntropyLoss(), xpdl.optim.Adam(m, lr=0.05))
    topt = torch.optim.Adam(tm.parameters(), lr=0.05)
    for _ in range(6):
        xh, yh = g.normal(size=(8, 2, 3)), g.integers(0, 3, 8)
        loss = step(backend.asarray(xh), backend.asarray(yh, dtype=backend.xp.int64))
        topt.zero_grad()
        ref = torch.nn.CrossEntropyLoss()(tm(torch.tensor(xh)), torch.tensor(yh))
        ref.backward()
        topt.step()
        _close(backend, loss, ref)
    assert step.mode == "replay"
    for p, q in zip(m.parameters(), tm.parameters()):
        tol = 1e-9 if backend.is64 else 1e-4
        np.testing.assert_allclose(backend.to_numpy(p.data), q.detach().numpy(), rtol=tol,
                                   atol=tol)


@pytest.mark.parametrize("dims", [(), (0,), (1, 2), (0, -1), (-2, -1), (2, 2), (-3, 1)])
def test_flatten_equals_torchs(backend, dims):
    """nn.Flatten(start_dim, end_dim) gives torch's shapes and values, and the gradient
    flows back in the input's shape."""
    torch = pytest.importorskip("torch")
    xh = np.random.default_rng(5).normal(size=(2, 3, 4, 5))
    x, xt = _torch_pair(backend, xh)
    out, ref = nn.Flatten(*dims)(x), torch.nn.Flatten(*dims)(xt)
    assert tuple(out.shape) == tuple(ref.shape)
    wh = np.random.default_rng(6).normal(size=tuple(ref.shape))
    (out * backend.asarray(wh)).sum().backward()
    (ref * torch.tensor(wh)).sum().backward()
    _close(backend, out.data, ref)
    _close(backend, x.grad, xt.grad)
    assert repr(nn.Flatten(*dims)) == repr(torch.nn.Flatten(*dims))


def test_flatten_names_axes_it_cannot_merge(backend):
    x = backend.asarray(np.ones((2, 3)))
    for dims in ((2,), (0, -3), (1, 0)):
        with pytest.raises(ValueError, match="do not name axes in order of an input with 2"):
            nn.Flatten(*dims)(x)
    for bad in (1.0, True, "1"):
        with pytest.raises(TypeError, match="start_dim must be an int"):
            nn.Flatten(bad)


@pytest.mark.parametrize("beta,threshold", [(1.0, 20.0), (2.0, 1.0), (0.5, -1.0)])
def test_softplus_layer_equals_torchs(backend, beta, threshold):
    torch = pytest.importorskip("torch")
    xh = np.random.default_rng(7).normal(size=(4, 5)) * 4
    x, xt = _torch_pair(backend, xh)
    layer, tl = nn.Softplus(beta, threshold), torch.nn.Softplus(beta, threshold)
    assert repr(layer) == repr(tl)
    out, ref = layer(x), tl(xt)
    out.sum().backward()
    ref.sum().backward()
    _close(backend, out.data, ref)
    _close(backend, x.grad, xt.grad)
    with pytest.raises(ValueError, match="beta must be positive"):
        nn.Softplus(beta=0.0)
    with pytest.raises(TypeError, match="threshold must be a number"):
        nn.Softplus(threshold="20")


def test_flatten_and_softplus_are_saved_and_loaded(backend, tmp_path):
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    m = nn.Sequential(nn.Flatten(1, 2), nn.Linear(6, 4, rng=0, **kw),
                      nn.Softplus(0.5, 3.0), nn.Linear(4, 2, rng=1, **kw))
    path = tmp_path / "m.safetensors"
    xpdl.save(m, path)
    back = xpdl.load(path, xp=backend.xp, device=backend.device)
    assert repr(back) == repr(m)
    x = backend.asarray(np.random.default_rng(8).normal(size=(3, 2, 3)))
    np.testing.assert_array_equal(backend.to_numpy(back(x)), backend.to_numpy(m(x)))


def test_parameters_without_recursion_and_children_listed_once_as_torch(backend):
    """parameters(recurse=False) and named_parameters(recurse=False) list a module's own
    parameters (recurse was a TypeError); a child registered under two names is one
    child, as in PyTorch."""
    torch = pytest.importorskip("torch")
    m = nn.Module()
    m.a = nn.Linear(3, 2, rng=0, xp=backend.xp, device=backend.device)
    m.b = m.a
    m.scale = xpdl.Tensor(backend.asarray(np.ones(1)), requires_grad=True)
    tm = torch.nn.Module()
    tm.a = torch.nn.Linear(3, 2)
    tm.b = tm.a
    tm.scale = torch.nn.Parameter(torch.ones(1))
    for rec in (True, False):
        assert [n for n, _ in m.named_parameters(recurse=rec)] == \
            [n for n, _ in tm.named_parameters(recurse=rec)]
        assert len(m.parameters(recurse=rec)) == len(list(tm.parameters(recurse=rec)))
    assert [n for n, _ in m.named_children()] == [n for n, _ in tm.named_children()] == ["a"]
    assert m.children() == [m.a]


_INIT_CASES = [("uniform_", dict(a=-0.3, b=0.7)), ("normal_", dict(mean=0.5, std=2.0)),
               ("xavier_uniform_", {}), ("xavier_uniform_", dict(gain=5 / 3)),
               ("xavier_normal_", dict(gain=0.5)), ("kaiming_uniform_", {}),
               ("kaiming_uniform_", dict(nonlinearity="relu")),
               ("kaiming_uniform_", dict(a=0.2, mode="fan_out")),
               ("kaiming_normal_", dict(nonlinearity="tanh", mode="fan_out")),
               ("kaiming_normal_", dict(a=5 ** 0.5))]


@pytest.mark.parametrize("name,kw", _INIT_CASES, ids=[f"{n}-{k}" for n, k in _INIT_CASES])
def test_init_functions_draw_torchs_ranges_from_the_seeded_generator(backend, name, kw,
                                                                     monkeypatch):
    """nn.init's functions (they did not exist) ask for the very range or deviation
    torch.nn.init asks for, for a (5, 3, 2, 2) weight: fans, gains and bounds as PyTorch
    computes them; the draws come from the seeded host generator, so one seed gives the
    same values on every backend, written into the Tensor (its dtype and device kept)."""
    torch = pytest.importorskip("torch")
    from xpdl.random import Generator

    asked = []
    for meth in ("uniform_", "normal_"):
        orig = getattr(torch.Tensor, meth)
        monkeypatch.setattr(torch.Tensor, meth, lambda self, *a, _o=orig, _m=meth, **k: (
            asked.append((_m, tuple(a[:2]))), _o(self, *a, **k))[1])
    getattr(torch.nn.init, name)(torch.empty(5, 3, 2, 2, dtype=torch.float64), **kw)
    ((kind, (p1, p2)),) = asked
    seen = []
    orig_u, orig_n = Generator.uniform, Generator.normal
    monkeypatch.setattr(Generator, "uniform", lambda self, shape, low, high, **k: (
        seen.append(("uniform_", (low, high))), orig_u(self, shape, low=low, high=high, **k))[1])
    monkeypatch.setattr(Generator, "normal", lambda self, shape, loc, scale, **k: (
        seen.append(("normal_", (loc, scale))), orig_n(self, shape, loc=loc, scale=scale, **k))[1])
    w = xpdl.Tensor(backend.asarray(np.zeros((5, 3, 2, 2))), requires_grad=True)
    assert getattr(nn.init, name)(w, **kw, rng=7) is w
    assert seen == [(kind, (p1, p2))]  # the same numbers PyTorch asked for, exactly
    assert w.data.dtype == backend.float_dtype and w.data.device == backend.device
    host = Generator(7)
    ref = host.uniform((5, 3, 2, 2), low=p1, high=p2) if kind == "uniform_" else \
        host.normal((5, 3, 2, 2), loc=p1, scale=p2)
    np.testing.assert_allclose(backend.to_numpy(w.data), ref, rtol=1e-6 if backend.is64 else 1e-5)


def test_init_gains_constants_and_misuse_as_torch(backend):
    torch = pytest.importorskip("torch")
    for args in (("linear",), ("sigmoid",), ("tanh",), ("relu",), ("leaky_relu",),
                 ("leaky_relu", 0.2), ("leaky_relu", 0), ("selu",), ("conv2d",)):
        assert nn.init.calculate_gain(*args) == torch.nn.init.calculate_gain(*args)
    for bad in (("gelu",), ("leaky_relu", "0.1"), ("leaky_relu", True)):
        with pytest.raises(ValueError):
            torch.nn.init.calculate_gain(*bad)
        with pytest.raises(ValueError):
            nn.init.calculate_gain(*bad)
    w = xpdl.Tensor(backend.asarray(np.ones((2, 3))), requires_grad=True)
    for fn, val in ((nn.init.zeros_, 0.0), (nn.init.ones_, 1.0),
                    (lambda t: nn.init.constant_(t, 0.25), 0.25)):
        assert fn(w) is w
        np.testing.assert_array_equal(backend.to_numpy(w.data), np.full((2, 3), val))
    b = xpdl.Tensor(backend.asarray(np.ones(3)), requires_grad=True)
    with pytest.raises(ValueError, match="at least 2 axes"):
        nn.init.xavier_uniform_(b)
    with pytest.raises(ValueError, match="mode must be"):
        nn.init.kaiming_normal_(w, mode="fan")
    with pytest.raises(ValueError, match="needs a <= b"):
        nn.init.uniform_(w, 1.0, 0.0)
    with pytest.raises(TypeError, match="expected an xpdl Tensor"):
        nn.init.zeros_(backend.asarray(np.ones(3)))
