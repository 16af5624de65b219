"""Fixtures of the GPU tier: a real NVIDIA GPU and a Python with CUDA torch, or a skip.

Nothing here imports docker or torch: the machines this tier runs on may have no Docker, and
torch runs in subprocesses so that its warnings and CUDA state stay out of pytest's process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu


def _torch_sees_a_gpu(python: str) -> bool:
    try:
        result = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"],
                                capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.stdout.strip().endswith("True")


@pytest.fixture(scope="session")
def gpu_python() -> str:
    """An interpreter whose torch sees a GPU (REPROBOX_GPU_PYTHON, else this one)."""
    python = os.environ.get("REPROBOX_GPU_PYTHON", sys.executable)
    if shutil.which("nvidia-smi") is None or not _torch_sees_a_gpu(python):
        pytest.skip("no NVIDIA GPU with CUDA torch here: the gpu tier runs on a GPU machine "
                    "(python scripts/gpu_check.py)")
    return python
