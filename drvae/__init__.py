"""drvae: rebalancing diabetic-retinopathy grading with a class-conditional VAE."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drvae")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
