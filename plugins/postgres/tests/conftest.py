"""The plugin's tests need the plugin installed. Without it they are not collected (the
core's ``postgresql`` tests say why they skip); under CI (``LANTHORN_REQUIRE_TOOLS``)
they are, and fail on the missing import."""

import importlib.util
import os

if importlib.util.find_spec("lanthorn_postgres") is None \
        and not os.environ.get("LANTHORN_REQUIRE_TOOLS"):
    collect_ignore_glob = ["test_*.py"]
