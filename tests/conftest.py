import builtins
import os

import pytest
from hypothesis import HealthCheck, settings

# "ci" keeps the whole suite within a few minutes on two cores; "thorough"
# is for a developer's long run: HYPOTHESIS_PROFILE=thorough pytest
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def hide_package(monkeypatch):
    """``hide_package("onnx")``: from then on, until the test ends, importing
    onnx fails as it would where it is not installed."""
    real_import = builtins.__import__
    hidden = set()

    def import_unless_hidden(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", import_unless_hidden)
    return hidden.add
