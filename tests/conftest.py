"""Shared fixtures: a sample manifest and a place to build bundles."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reprobox import seeding
from reprobox.manifest import (
    SCHEMA_VERSION,
    FileRecord,
    Git,
    Manifest,
    Output,
    Package,
    Python,
    Run,
    System,
)


@pytest.fixture
def sample_manifest() -> Manifest:
    """A realistic manifest of a small numpy run on a Debian host."""
    return Manifest(
        schema_version=SCHEMA_VERSION,
        created_by="reprobox 0.1.0",
        run=Run(
            argv=("python", "train.py", "--epochs", "3"),
            project="numpy-sgd",
            workdir=".",
            started="2026-11-27T20:00:00Z",
            duration_s=1.25,
            exit_code=0,
            env={"OMP_NUM_THREADS": "1"},
            env_redacted=("HF_TOKEN",),
            env_not_captured=42,
        ),
        determinism=replace(seeding.determinism(1234, threads=1),
                            state={"random.seeded": True, "numpy.version": "2.1.3"}),
        python=Python(
            version="3.11.7",
            implementation="cpython",
            executable="/venv/bin/python",
            abi_tag="cp311",
            platform_tag="linux_x86_64",
            packages=(Package("numpy", "2.1.3"), Package("pyyaml", "6.0.2")),
        ),
        system=System(
            os_id="debian",
            os_version="12",
            os_name="Debian GNU/Linux 12 (bookworm)",
            kernel="6.1.0",
            arch="x86_64",
            libc="glibc 2.36",
            cpu_model="Test CPU",
            cpu_count=2,
            cpu_flags=("avx2", "sse4_2"),
        ),
        git=Git(
            commit="0123456789", branch="main", remote="https://example.org/x.git", dirty=False
        ),
        inputs=(FileRecord("data/train.csv", "ab" * 32, 100),),
        outputs=(Output("out/weights.npy", "cd" * 32, 256),),
        source_files=(FileRecord("train.py", "ef" * 32, 1000),),
    )
