"""The data contract every stage reads (torch-free)."""

from importlib.metadata import PackageNotFoundError, version

try:  # the installed distribution's version: what `recall --version` and the OpenAPI document say
    __version__ = version("nearline-recall")
except PackageNotFoundError:  # a checkout run without installing it
    __version__ = "0+unknown"
