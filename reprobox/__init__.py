"""reprobox: capture an ML run and its environment, rebuild it as an image, replay and compare.

The public API is small; the CLI (`reprobox.cli`) is a thin layer over these modules.
"""

from __future__ import annotations

from reprobox.errors import ReproboxError
from reprobox.manifest import Manifest

__version__ = "0.1.0"
__all__ = ["Manifest", "ReproboxError", "__version__"]
