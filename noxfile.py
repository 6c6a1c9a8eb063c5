"""Developer sessions: ``nox -s tests|lint|docs|bench|gpu``."""

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "none"  # reuse the current environment


@nox.session
def tests(session):
    """Run the test suite; extra arguments go to pytest."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session):
    """Static checks with ruff."""
    session.run("ruff", "check", "xpdl", "tests", "asv_benchmarks", *session.posargs)


@nox.session
def docs(session):
    """Build the Sphinx docs with warnings as errors, then check in headless Chromium, with
    the network off, that every page's math is rendered (tools/check_docs_math.py)."""
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html",
                *session.posargs)
    session.run("python", "tools/check_docs_math.py", "docs/_build/html")


@nox.session
def bench(session):
    """Run the asv suite once against the installed package (quick)."""
    session.chdir("asv_benchmarks")
    session.run("asv", "machine", "--yes")
    session.run("asv", "run", "--python=same", "--quick", "--show-stderr", *session.posargs)


@nox.session
def gpu(session):
    """On a machine with an NVIDIA GPU: the suite with CuPy and torch CUDA, then the bench."""
    session.run("bash", "tools/gpu_check.sh", *session.posargs)
