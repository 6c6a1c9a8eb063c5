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
# signatures show defaults as written ("orders=DEFAULT_ORDERS", not its 160 numbers)
autodoc_preserve_defaults = True
# The example gallery runs its scripts at build time and keeps their figures.
if importlib.util.find_spec("sphinx_gallery") and importlib.util.find_spec("matplotlib"):
    extensions.append("sphinx_gallery.gen_gallery")
    sphinx_gallery_conf = {"examples_dirs": "examples", "gallery_dirs": "auto_examples",
                           "filename_pattern": r"plot_", "download_all_examples": False,
                           "remove_config_comments": True}
    exclude_patterns = ["_build", "examples", "auto_examples/*.ipynb", "auto_examples/*.py",
                        "auto_examples/*.zip", "auto_examples/*.json"]
html_theme = ("pydata_sphinx_theme" if importlib.util.find_spec("pydata_sphinx_theme")
              else "alabaster")
html_theme_options = {"navigation_with_keys": False} if html_theme != "alabaster" else {}
exclude_patterns = globals().get("exclude_patterns", ["_build"])
nitpicky = False
suppress_warnings = ["ref.citation"]
