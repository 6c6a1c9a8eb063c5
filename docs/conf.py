"""Sphinx configuration for xpdl's documentation."""

import importlib.util
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "xpdl"
author = "xpdl developers"
copyright = "2026, xpdl developers"
from xpdl import __version__ as release  # noqa: E402

extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.mathjax",
              "sphinx.ext.doctest"]
# Math renders offline: MathJax ships with the docs (sphinx-mathjax-offline copies it into
# _static and points mathjax_path there) instead of coming from a CDN.
if importlib.util.find_spec("sphinx-mathjax-offline"):
    extensions.append("sphinx-mathjax-offline")
if importlib.util.find_spec("numpydoc"):
    extensions.append("numpydoc")
    numpydoc_show_class_members = False
    numpydoc_validation_checks = set()
else:  # pragma: no cover
    extensions.append("sphinx.ext.napoleon")
autosummary_generate = False
autodoc_default_options = {"inherited-members": False}
html_theme = ("pydata_sphinx_theme" if importlib.util.find_spec("pydata_sphinx_theme")
              else "alabaster")
html_theme_options = {"navigation_with_keys": False} if html_theme != "alabaster" else {}
exclude_patterns = ["_build"]
nitpicky = False
suppress_warnings = ["ref.citation"]
