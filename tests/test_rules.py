"""The optimizers' update rules (``xpdl.optim._rules``), written once and executed four
ways: called on whole arrays (the portable chain), traced into ufunc calls with ``out=``
(NumPy, torch), turned into the source of a CuPy ``ElementwiseKernel``, and compiled by
Numba. Here each execution is checked against an independent reference: PyTorch's
``torch.optim`` update written out in float64 NumPy below, and, for the CUDA source on a
machine without a GPU, the same source compiled as C."""

from __future__ import annotations

import ctypes
import itertools
import shutil
import subprocess

import numpy as np
import pytest

from xpdl.optim import _fused, _rules

ADAM_FLAGS = list(itertools.product([False, True], repeat=4))
SGD_FLAGS = [f for f in itertools.product([False, True], repeat=4) if f[2] or not f[3]]


def _state(n, seed=0):
    g = np.random.default_rng(seed)
    p, grad = g.normal(size=n), g.normal(size=n)
    m, v, b = 0.1 * g.normal(size=n), g.random(n), g.normal(size=n)
    p[:3] = 0.0
    grad[:2] = -0.0
    v[:2] = 0.0  # sqrt(0) + eps
    # AMSGrad's maximum so far: above the new second moment in some elements, below in
    # others (the v of this step is about 0.99 v + 0.01 g^2)
    vmax = v + 0.02 * g.normal(size=n)
    vmax[::2] = np.abs(vmax[::2])
    vmax[5] = np.nan  # (np.maximum's and torch.maximum's NaN wins)
    # sq >= m * m: RMSprop's centered average stays non-negative (as in training)
    return {"p": p, "g": grad, "m": m, "v": v, "b": b, "sq": v + m * m, "vmax": vmax}


ADAM_K = dict(c=0.03, lr=0.01, b1=0.85, b2=0.99, eps=1e-6, t=3)
SGD_K = dict(c=0.03, lr=0.05, momentum=0.9)


def _adam_scalars(flags):
    l2, decoupled, coupled, amsgrad = flags
    return _fused.adam_scalars(wd_l2=0.2 if coupled else 0.0,
                               wd_decoupled=0.3 if decoupled else 0.0, **ADAM_K)


def _torch_adam(s, flags):
    """torch.optim.Adam/AdamW's update of step t, written out (float64, PyTorch's order:
    decoupled decay, coupled decay, moments, AMSGrad's maximum, bias corrections)."""
    l2, decoupled, coupled, amsgrad = flags
    k = ADAM_K
    p, g, m, v = (s[n].copy() for n in "pgmv")
    out = {}
    if l2:
        g = g + k["c"] * p
    if decoupled:
        p = p * (1 - k["lr"] * 0.3)
    if coupled:
        g = g + 0.2 * p
    m = k["b1"] * m + (1 - k["b1"]) * g
    v = k["b2"] * v + (1 - k["b2"]) * g * g
    bc1, bc2 = 1 - k["b1"] ** k["t"], 1 - k["b2"] ** k["t"]
    top = v
    if amsgrad:
        top = out["vmax"] = np.maximum(s["vmax"], v)
    p = p - k["lr"] / bc1 * m / (np.sqrt(top) / np.sqrt(bc2) + k["eps"])
    return {"p": p, "m": m, "v": v, **out}


def _torch_sgd(s, flags):
    l2, coupled, with_momentum, nesterov = flags
    k = SGD_K
    p, g, b = (s[n].copy() for n in "pgb")
    if l2:
        g = g + k["c"] * p
    if coupled:
        g = g + 0.1 * p
    out = {}
    if with_momentum:
        b = k["momentum"] * b + g
        g = g + k["momentum"] * b if nesterov else b
        out["b"] = b
    out["p"] = p - k["lr"] * g
    return out


def _sgd_scalars(flags):
    return _fused.sgd_scalars(wd=0.1 if flags[1] else 0.0, **SGD_K)


RMS_FLAGS = list(itertools.product([False, True], repeat=4))
ADAGRAD_FLAGS = list(itertools.product([False, True], repeat=2))
RMS_K = dict(c=0.03, wd=0.2, alpha=0.9, eps=1e-6, lr=0.01, mu=0.8)
ADAGRAD_K = dict(c=0.03, wd=0.2, eps=1e-6, lr=0.05)


def _torch_rmsprop(s, flags):
    """torch.optim.RMSprop's update (alpha, eps, momentum, centered, weight_decay)."""
    l2, coupled, centered, with_momentum = flags
    k = RMS_K
    p, g, sq, ga, b = (s[n].copy() for n in ("p", "g", "sq", "m", "b"))
    if l2:
        g = g + k["c"] * p
    if coupled:
        g = g + k["wd"] * p
    sq = k["alpha"] * sq + (1 - k["alpha"]) * g * g
    out = {"s": sq}
    if centered:
        ga = k["alpha"] * ga + (1 - k["alpha"]) * g
        avg = np.sqrt(sq - ga * ga) + k["eps"]
        out["ga"] = ga
    else:
        avg = np.sqrt(sq) + k["eps"]
    d = g / avg
    if with_momentum:
        b = k["mu"] * b + d
        d = b
        out["b"] = b
    out["p"] = p - k["lr"] * d
    return out


def _torch_adagrad(s, flags):
    l2, coupled = flags
    k = ADAGRAD_K
    p, g, sm = (s[n].copy() for n in ("p", "g", "v"))
    if l2:
        g = g + k["c"] * p
    if coupled:
        g = g + k["wd"] * p
    sm = sm + g * g
    return {"s": sm, "p": p - k["lr"] * g / (np.sqrt(sm) + k["eps"])}


CASES = ([("adam", f) for f in ADAM_FLAGS] + [("sgd", f) for f in SGD_FLAGS]
         + [("rmsprop", f) for f in RMS_FLAGS] + [("adagrad", f) for f in ADAGRAD_FLAGS])
IDS = [f"{n}-{''.join(str(int(x)) for x in f)}" for n, f in CASES]


def _case(name, flags):
    """The rule, its constants, the reference, and the state's names in ``_state``."""
    if name == "adam":
        return _fused.ADAM, _adam_scalars(flags), _torch_adam, {}
    if name == "sgd":
        return _fused.SGD, _sgd_scalars(flags), _torch_sgd, {}
    if name == "rmsprop":
        k = RMS_K
        return (_fused.RMSPROP, (k["c"], k["wd"], k["alpha"], 1 - k["alpha"], k["eps"],
                                 k["lr"], k["mu"]), _torch_rmsprop, {"s": "sq", "ga": "m"})
    k = ADAGRAD_K
    return _fused.ADAGRAD, (k["c"], k["wd"], k["eps"], k["lr"]), _torch_adagrad, {"s": "v"}


def _absent(rule, flags, arrays):
    """None for the state arrays a configuration lacks (no momentum, not centered)."""
    on = dict(zip(rule.flags, flags))
    for n, flag in (("b", "with_momentum"), ("ga", "centered"), ("vmax", "amsgrad")):
        if n in rule.arrays and flag in on and not on[flag]:
            arrays[rule.arrays.index(n)] = None
    return arrays


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_traced_ufunc_update_follows_torch_and_the_rule_on_arrays(backend, case):
    """The rule called on whole arrays (the portable chain) against torch.optim's update;
    then the in-place execution (NumPy, torch: the traced ``out=`` calls, bit for bit;
    CuPy: the generated ``ElementwiseKernel``) against it, writing only the state (and
    scratch buffers it allocates itself), never the gradient."""
    name, flags = case
    rule, scalars, ref, alias = _case(name, flags)
    s = _state(50)
    want = ref(s, flags)
    xp = backend.xp
    arrays = _absent(rule, flags, [backend.asarray(s[alias.get(n, n)]) for n in rule.arrays])
    args = list(arrays) + list(scalars) + list(flags) + [getattr(xp, f) for f in rule.funcs]
    whole = dict(zip(rule.outputs, rule.fn(*args)))  # the portable execution
    tol = 1e-12 if backend.is64 else 2e-6
    for n, w in want.items():
        np.testing.assert_allclose(backend.to_numpy(whole[n]), w, rtol=tol, atol=tol,
                                   err_msg=n)
    if not _fused.supported(xp):
        return
    g_before = backend.to_numpy(arrays[1]).copy()
    _fused.apply_rule(xp, rule, flags, arrays, [], scalars)  # CuPy: the generated kernel
    for n, a in zip(rule.arrays, arrays):
        if n in want:
            got, ref_ = backend.to_numpy(a), backend.to_numpy(whole[n])
            # (CuPy's kernel is compiled without fused multiply-adds: the same roundings)
            np.testing.assert_array_equal(got, ref_, err_msg=n)
    np.testing.assert_array_equal(backend.to_numpy(arrays[1]), g_before)  # g only read


def _c_library(tmp_path, rule, flags, ctype, l2_prefix=False):
    """The CuPy kernel's source, ``ElementwiseKernel`` semantics spelled out as a C loop
    (each name one element, ``i`` the index; outputs written back), built as a shared
    library."""
    ins, outs, body = _fused.trace(rule, flags).kernel_spec(l2_prefix)
    in_names = [p.split()[1] for p in ins.split(", ")]
    out_names = [p.split()[1] for p in outs.split(", ")]
    arrays = [n for n in in_names if n in rule.arrays]
    params = ([f"T *A_{n}" for n in out_names] + [f"const T *A_{n}" for n in arrays]
              + [f"{'long' if n == 'n_l2' else 'T'} {n}" for n in in_names
                 if n not in rule.arrays])
    src = "\n".join([
        "#include <math.h>", f"typedef {ctype} T;",
        f"void run(long n_, {', '.join(params)}) {{",
        "  for (long i = 0, i_ = 0; i_ < n_; i = ++i_) {",
        *[f"    T {n} = A_{n}[i_];" for n in out_names + arrays],
        *["    " + line for line in body.splitlines()],
        *[f"    A_{n}[i_] = {n};" for n in out_names],
        "  }", "}"])
    c = tmp_path / "k.c"
    c.write_text(src)
    lib = tmp_path / "k.so"
    subprocess.run([shutil.which("cc"), "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                    "-o", str(lib), str(c), "-lm"], check=True)
    return ctypes.CDLL(str(lib)), out_names, arrays, [n for n in in_names
                                                      if n not in rule.arrays]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_generated_cuda_kernel_source_computes_the_rule(backend, case, tmp_path):
    """Without a GPU, the ``ElementwiseKernel`` source CuPy would compile is compiled as
    C (in the backend's dtype, no contraction into fused multiply-adds) and run: equal to
    the rule called on the backend's arrays (NumPy: bit for bit) and to torch.optim's
    update."""
    name, flags = case
    rule, scalars, ref, alias = _case(name, flags)
    is64 = backend.is64
    dt, ctype, cscalar = ((np.float64, "double", ctypes.c_double) if is64
                          else (np.float32, "float", ctypes.c_float))
    lib, outs, ins, scalar_names = _c_library(tmp_path, rule, flags, ctype)
    s = _state(64)
    host = {n: np.array(s[alias.get(n, n)], dtype=dt) for n in rule.arrays}  # (copies)
    named = dict(zip(rule.scalars, scalars))
    ptr = [host[n].ctypes.data_as(ctypes.c_void_p) for n in outs + ins]
    lib.run(ctypes.c_long(64), *ptr, *[cscalar(named[n]) for n in scalar_names])
    xp = backend.xp
    arrays = _absent(rule, flags, [backend.asarray(s[alias.get(n, n)]) for n in rule.arrays])
    args = list(arrays) + list(scalars) + list(flags) + [getattr(xp, f) for f in rule.funcs]
    whole = dict(zip(rule.outputs, rule.fn(*args)))
    want = ref(s, flags)
    tol = 1e-12 if is64 else 2e-6
    for n in outs:
        np.testing.assert_allclose(host[n], want[n], rtol=tol, atol=tol, err_msg=n)
        if backend.name == "numpy":
            np.testing.assert_array_equal(host[n], backend.to_numpy(whole[n]), err_msg=n)
        else:
            np.testing.assert_allclose(host[n], backend.to_numpy(whole[n]), rtol=tol,
                                       atol=tol, err_msg=n)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.parametrize("case", [c for c in CASES if c[1][0]], ids=[
    i for c, i in zip(CASES, IDS) if c[1][0]])
def test_one_cuda_kernel_applies_l2_to_the_leading_elements(backend, case, tmp_path):
    """CuPy's flat step is one launch: the kernel made with ``l2_prefix`` adds the L2 term
    to the elements before ``n_l2`` and computes the others without it. Its source, as
    C (see above), against the rule on the backend's arrays with the term for the first
    23 of 64 elements and without it for the rest (NumPy: bit for bit); the trace of
    every rule with its l2 flag begins with the term."""
    name, flags = case
    rule, scalars, _, alias = _case(name, flags)
    assert _fused.trace(rule, flags).l2_prefix()
    assert not _fused.trace(rule, (False, *flags[1:])).l2_prefix()
    dt, ctype, cscalar = ((np.float64, "double", ctypes.c_double) if backend.is64
                          else (np.float32, "float", ctypes.c_float))
    lib, outs, ins, scalar_names = _c_library(tmp_path, rule, flags, ctype, l2_prefix=True)
    assert scalar_names[-1] == "n_l2"
    s = _state(64)
    host = {n: np.array(s[alias.get(n, n)], dtype=dt) for n in rule.arrays}
    named = dict(zip(rule.scalars, scalars))
    ptr = [host[n].ctypes.data_as(ctypes.c_void_p) for n in outs + ins]
    lib.run(ctypes.c_long(64), *ptr, *[cscalar(named[n]) for n in scalar_names[:-1]],
            ctypes.c_long(23))
    xp = backend.xp
    want = {}
    for on, part in ((True, slice(0, 23)), (False, slice(23, 64))):
        arrays = _absent(rule, flags, [backend.asarray(s[alias.get(n, n)][part])
                                       for n in rule.arrays])
        args = list(arrays) + list(scalars) + [on, *flags[1:]] + [getattr(xp, f)
                                                                   for f in rule.funcs]
        for n, a in zip(rule.outputs, rule.fn(*args)):
            if a is not None:  # (an absent state array comes back None)
                want.setdefault(n, []).append(backend.to_numpy(a))
    tol = 1e-12 if backend.is64 else 2e-6
    for n in outs:
        w = np.concatenate(want[n])
        if backend.name == "numpy":
            np.testing.assert_array_equal(host[n], w, err_msg=n)
        else:
            np.testing.assert_allclose(host[n], w, rtol=tol, atol=tol, err_msg=n)
    with pytest.raises(ValueError, match="does not begin with the L2 term"):
        _fused.trace(rule, (False, *flags[1:])).kernel_spec(l2_prefix=True)


def test_a_rule_with_a_literal_or_a_constant_expression_is_refused():
    """Constants are arguments (so every execution rounds them alike) and combinations of
    constants are computed once per step, not per element: both refused when traced."""
    def literal(p, g, lr, l2):
        return (p - g * 0.5,)

    def constants(p, g, lr, l2):
        return (p - g * (lr * lr),)

    for fn, match in ((literal, "literal 0.5"), (constants, "two constants")):
        rule = _fused._Rule(fn, ("p", "g"), ("lr",), ("l2",), ("p",))
        with pytest.raises(TypeError, match=match):
            _fused.Trace(rule, (False,))


def test_the_planned_update_needs_at_most_two_scratch_buffers():
    """No allocation per step: every configuration runs in the state arrays and one or
    two scratch buffers (the number the flat steppers allocate once)."""
    for name, flags in CASES:
        rule = _case(name, flags)[0]
        _, n = _fused.trace(rule, flags).python_source()
        assert 1 <= n <= 2, (rule.fn.__name__, flags, n)
    assert _rules.add_l2(1.0, 2.0, 0.5) == 2.0


@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "amsgrad"])
def test_rmsprop_adagrad_and_amsgrad_get_the_flat_in_place_step(backend, name):
    """RMSprop, Adagrad and Adam(amsgrad=True) through ``compile_step`` update every
    parameter with the flat in-place executions of their rules on NumPy, CuPy and torch
    (their state becomes views into one flat buffer per kind); 30 replayed steps equal
    torch.optim's."""
    torch = pytest.importorskip("torch")
    import xpdl
    from xpdl import losses, nn, optim
    from xpdl.random import Generator

    g = np.random.default_rng(0)
    X_h, Y_h = g.normal(size=(16, 4)), g.normal(size=(16, 2))
    model = nn.Sequential(nn.Linear(4, 6, rng=Generator(0), xp=backend.xp,
                                    device=backend.device, dtype=backend.float_dtype),
                          nn.Tanh(),
                          nn.Linear(6, 2, rng=Generator(1), xp=backend.xp,
                                    device=backend.device, dtype=backend.float_dtype))
    init = [backend.to_numpy(p).astype(np.float64) for p in model.parameters()]
    kw = {"rmsprop": dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1),
          "adagrad": dict(lr=0.05, weight_decay=0.1),
          "amsgrad": dict(lr=0.05, weight_decay=0.1, amsgrad=True)}[name]
    cls = {"rmsprop": "RMSprop", "adagrad": "Adagrad", "amsgrad": "Adam"}[name]
    opt = getattr(optim, cls)(model, **kw)
    step = xpdl.compile_step(model, losses.mse, opt)
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    for _ in range(30):
        step(X, Y)
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                                 torch.nn.Linear(6, 2)).double()
    with torch.no_grad():
        for p, a in zip(tmodel.parameters(), init):
            p.copy_(torch.tensor(a.T if a.ndim == 2 and p.shape != a.shape else a))
    topt = getattr(torch.optim, cls)(tmodel.parameters(), **kw)
    Xt, Yt = torch.tensor(X_h), torch.tensor(Y_h)
    for _ in range(30):
        topt.zero_grad()
        torch.nn.functional.mse_loss(tmodel(Xt), Yt).backward()
        topt.step()
    tol = 1e-9 if backend.is64 else 2e-4
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        a = backend.to_numpy(p)
        t = tp.detach().numpy()
        np.testing.assert_allclose(a, t.T if a.shape != t.shape else t, rtol=tol, atol=tol)
    flat = [k for k in opt._scratch if isinstance(k, str) and k.startswith("flat")
            and k != "flat_s"]
    if _fused.supported(backend.xp):
        assert len(flat) == {"rmsprop": 3, "adagrad": 1, "amsgrad": 3}[name], flat
    else:
        assert not flat
