"""The library version (a leaf module: recorded in markers, shown by ``--version``)."""

__version__ = "0.1.0"
