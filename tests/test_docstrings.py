"""Run the examples in every public docstring against the installed package."""

import doctest
import importlib
import pkgutil

import pytest

import cyconv

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(cyconv.__path__, "cyconv.")
    if "._kernels." not in info.name and not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
