"""pytest collects the docs' .rst doctests; the gallery's scripts run in the docs build
(sphinx-gallery), not here."""

collect_ignore = ["conf.py"]
collect_ignore_glob = ["examples/*", "auto_examples/*"]
