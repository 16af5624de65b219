"""A fake engine whose replays write files, and whose environment probe really runs, here.

The probe is the script replay mounts into its container; this engine runs the mounted file with
this interpreter, as the image's Python would run it, so tests read a real report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from reprobox import manifest as manifest_io
from reprobox.build import BuiltImage
from reprobox.bundle import Bundle
from reprobox.engine import ContainerResult, ContainerSpec
from reprobox.fileio import sha256_file
from reprobox.manifest import Manifest, Output
from reprobox.replay import STATE_DIR
from tests.unit.fakes import FakeEngine

BUILT = BuiltImage("reprobox/numpy-sgd:0123", "base:1", "3.11.7", "3.11.7")
STATE = {"seed": 1234, "processes": 1, "env.OMP_NUM_THREADS": "1", "numpy.version": "2.1.3"}


@dataclass
class ScriptedEngine(FakeEngine):
    """Each replay writes the next entry of `writes` ({project path: bytes}) and a shim state."""

    writes: list[Mapping[str, bytes]] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    probe_fails: bool = False
    probes: list[ContainerSpec] = field(default_factory=list)

    def run(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        fetch: Sequence[str] = (),
        fetch_into: Path | None = None,
    ) -> ContainerResult:
        if spec.argv[:2] == ("python", "-I"):
            return self._probe(spec)
        self.runs.append(spec)
        assert fetch_into is not None
        for path, data in (self.writes.pop(0) if self.writes else {}).items():
            (fetch_into / path).parent.mkdir(parents=True, exist_ok=True)
            (fetch_into / path).write_bytes(data)
        (fetch_into / STATE_DIR).mkdir(parents=True, exist_ok=True)
        (fetch_into / STATE_DIR / "state-7.json").write_text(json.dumps(STATE))
        return ContainerResult(self.exit_codes.pop(0) if self.exit_codes else 0, False)

    def _probe(self, spec: ContainerSpec) -> ContainerResult:
        self.probes.append(spec)
        if self.probe_fails:
            return ContainerResult(1, False, (), b"", b"Traceback: boom\n")
        script = next(mount.source for mount in spec.mounts if mount.target == spec.argv[2])
        done = subprocess.run([sys.executable, "-I", script, *spec.argv[3:]],
                              capture_output=True, timeout=120, check=False)
        return ContainerResult(done.returncode, False, (), done.stdout, done.stderr)


def bundle_with_outputs(root: Path, manifest: Manifest, outputs: Mapping[str, bytes]) -> Bundle:
    """A built bundle under `root/.reprobox/runs/r1` whose original wrote `outputs`."""
    bundle = Bundle(root / ".reprobox" / "runs" / "r1")
    records = []
    for path, data in outputs.items():
        stored = bundle.outputs_dir / path
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(data)
        records.append(Output(path, sha256_file(stored), len(data)))
    bundle.logs_dir.mkdir(parents=True, exist_ok=True)
    (bundle.logs_dir / "stdout.log").write_text("done\n")
    determinism = replace(manifest.determinism, state=STATE)
    manifest_io.write(replace(manifest, outputs=tuple(records), inputs=(),
                              determinism=determinism), bundle.manifest_path)
    bundle.build_record_path.write_text(json.dumps(asdict(BUILT)))
    return bundle


def npy(values: Sequence[float]) -> bytes:
    """The bytes of a float64 .npy file holding `values`."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=np.float64))
    return buffer.getvalue()
