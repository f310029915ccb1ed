"""drvae: rebalancing diabetic-retinopathy grading with a class-conditional VAE."""

import os
from importlib.metadata import PackageNotFoundError, version

# drvae never touches the network: albumentations would otherwise ask PyPI for its version.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

try:
    __version__ = version("drvae")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
