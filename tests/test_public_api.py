"""The public API is what ``__all__`` says, and the math never imports NumPy."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import warnings

import pytest

import xpdl

MODULES = ["xpdl", "xpdl.functional", "xpdl.random", "xpdl.autodiff", "xpdl.losses", "xpdl.nn",
           "xpdl.optim", "xpdl.optim.schedules", "xpdl.estimators", "xpdl.datasets",
           "xpdl.privacy", "xpdl.explain", "xpdl.io", "xpdl.exceptions"]
OPTIONAL = []

# Modules allowed to import NumPy: the backend layer and the edges (host RNG, IO, data, CLI).
EDGE = re.compile(r"xpdl/(_namespace|random|io|export|datasets/.*|cli|__main__)\.py$")


@pytest.mark.parametrize("name", MODULES + OPTIONAL)
def test_all_names_exist_and_are_public(name):
    mod = importlib.import_module(name)
    assert hasattr(mod, "__all__"), name
    for attr in mod.__all__:
        assert hasattr(mod, attr), f"{name}.{attr} is in __all__ but missing"
    public = {k for k, v in vars(mod).items()
              if not k.startswith("_") and getattr(v, "__module__", name).startswith(name)
              and callable(v)}
    missing = public - set(mod.__all__)
    assert not missing, f"{name} defines public callables not in __all__: {sorted(missing)}"


def _public_callables():
    seen = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        for attr in mod.__all__:
            obj = getattr(mod, attr)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen and \
                    not (inspect.isclass(obj) and issubclass(obj, BaseException)):
                seen[id(obj)] = (f"{name}.{attr}", obj)
    return sorted(seen.values(), key=lambda kv: kv[0])


@pytest.mark.parametrize("qualname, obj", _public_callables(), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_every_public_callable_has_a_numpydoc_docstring(qualname, obj):
    """Each public function and class documents every argument of its signature in a
    numpydoc ``Parameters`` section (a class may use ``Attributes``), and each function
    says what it returns (``Returns`` or ``Yields``), as parsed by numpydoc itself."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpydoc warns on sections it cannot parse
        doc = docscrape.ClassDoc(obj) if inspect.isclass(obj) else docscrape.FunctionDoc(obj)
    entries = doc["Parameters"] + (doc["Attributes"] if inspect.isclass(obj) else [])
    documented = {n.strip().lstrip("*") for e in entries for n in e.name.split(",")}
    wanted = {n for n in inspect.signature(obj).parameters if not n.startswith("_")}
    assert wanted <= documented, f"{qualname}: undocumented {sorted(wanted - documented)}"
    if inspect.isfunction(obj):
        assert doc["Returns"] or doc["Yields"], f"{qualname}: no Returns section"
        assert documented <= wanted, \
            f"{qualname}: documents {sorted(documented - wanted)}, not in its signature"


def _public_methods():
    """Public methods of the public classes written in xpdl (inherited ones included,
    each function once); a layer's ``forward`` and ``extra_repr`` are documented by its
    class (the shapes it takes and gives: call the module)."""
    out = {}
    for _, cls in _public_callables():
        if not inspect.isclass(cls):
            continue
        members = {}
        for k in reversed(cls.__mro__):
            if k.__module__.startswith("xpdl"):
                members.update(vars(k))
        for name, m in members.items():
            f = getattr(m, "__func__", m)
            if (name.startswith("_") and name != "__call__") or not inspect.isfunction(f) \
                    or not f.__module__.startswith("xpdl") or id(f) in out or \
                    (name in ("forward", "extra_repr") and f.__qualname__ != "Module.forward"):
                continue
            out[id(f)] = (f"{f.__module__}.{f.__qualname__}", f, isinstance(m, staticmethod))
    return sorted(out.values(), key=lambda v: v[0])


@pytest.mark.parametrize("qualname, f, static", _public_methods(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_method_has_a_numpydoc_docstring(qualname, f, static):
    """As above for methods: every argument but ``self`` documented, a Returns section."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = docscrape.FunctionDoc(f)
    documented = {n.strip().lstrip("*") for e in doc["Parameters"] for n in e.name.split(",")}
    names = list(inspect.signature(f).parameters)[0 if static else 1:]
    wanted = {n for n in names if not n.startswith("_")}
    assert wanted <= documented, f"{qualname}: undocumented {sorted(wanted - documented)}"
    assert doc["Returns"] or doc["Yields"], f"{qualname}: no Returns section"


def test_math_does_not_import_numpy():
    root = pathlib.Path(xpdl.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).as_posix()
        if EDGE.search(rel):
            continue
        text = path.read_text()
        if re.search(r"^\s*(import numpy|from numpy)", text, re.MULTILINE):
            offenders.append(rel)
    assert not offenders, f"these modules import NumPy in the math: {offenders}"


def test_import_xpdl_is_light():
    """``import xpdl`` loads neither scikit-learn nor SciPy (the estimators load on first
    use), and NotFittedError is still scikit-learn's where it is installed."""
    import subprocess
    import sys

    code = ("import sys, xpdl; print('sklearn' in sys.modules, 'scipy' in sys.modules);"
            "e = xpdl.NotFittedError; print('sklearn' in sys.modules);"
            "import sklearn.exceptions as se; print(issubclass(e, se.NotFittedError),"
            " issubclass(e, ValueError), issubclass(e, AttributeError))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "False False"
    assert out[1] == "True"  # asking for NotFittedError brings scikit-learn's base class
    assert out[2] == "True True True"
