"""``python -m cyconv``: the ``cyconv`` command line (see :mod:`cyconv.cli`)."""

from .cli import entry_point

if __name__ == "__main__":
    entry_point()
