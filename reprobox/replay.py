"""Replay a bundle's command in its image, hardened and seeded, and collect what it wrote.

Each replay lands in `replays/<replay-id>/` (outputs, logs, replay.json, comparison.json),
staged and renamed into place only when complete.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath

from reprobox import preflight, render, seeding
from reprobox.build import BuiltImage, read_built
from reprobox.bundle import Bundle
from reprobox.compare import Comparison, combine, compare, compare_file
from reprobox.engine import ContainerSpec, Engine, Mount
from reprobox.errors import BundleError, ReplayError
from reprobox.fileio import atomic_write, sha256_file, staged_dir
from reprobox.manifest import SECRET_MASK, Gpus, Manifest, Output, Scalar

STATE_DIR = ".reprobox-state"
DEFAULT_TIMEOUT_S = 6 * 3600.0
# What "within tolerance" means where bitwise equality cannot be expected (another GPU, the CPU);
# an output captured with looser tolerances keeps them.
CROSS_DEVICE_RTOL = 1e-4
CROSS_DEVICE_ATOL = 1e-6
NO_GPU = Gpus(source="none")
_AS_CAPTURED = preflight.Preflight()


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """How a replay went; stored as `replay.json` in its folder."""

    replay_id: str
    image: str
    exit_code: int
    timed_out: bool
    duration_s: float
    started: str
    state: dict[str, str | int | float | bool | None]
    gpus: bool = False  # the host's GPUs were handed to the container
    expect_tolerance: bool = False  # another GPU or the CPU: equality is not expected
    notes: list[str] = field(default_factory=list)  # what the preflight found

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def replay(
    bundle: Bundle,
    engine: Engine,
    on_output: Callable[[bytes], None],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory: str | None = None,
    host_gpus: Gpus = NO_GPU,
    cpu: bool = False,
) -> Path:
    """Run the recorded command in the bundle's image; returns the replay's folder.

    `host_gpus` is what this host has (the GPU probe's answer); `cpu` replays a GPU run on
    the CPU. The preflight runs before the image is even looked at.
    """
    manifest = bundle.manifest()
    engine.ping()
    plan_ahead(manifest, engine, host_gpus, cpu)  # refuse before looking for the image
    built = read_built(bundle)
    if not engine.has_image(built.tag):
        raise ReplayError(
            f"image {built.tag} is not present",
            hint="run `reprobox build` to rebuild it from the bundle",
        )
    plan = plan_ahead(manifest, engine, host_gpus, cpu, engine.image_env(built.tag))
    spec = container_spec(manifest, built, _input_mounts(bundle, manifest), timeout_s, memory,
                          plan)
    fetch = [f"{render.PROJECT_DIR}/{o.path}" for o in manifest.outputs]
    fetch.append(f"{render.PROJECT_DIR}/{STATE_DIR}")
    final = bundle.replays_dir / _replay_id()
    with staged_dir(final) as staging:
        result = _run(engine, spec, fetch, staging, on_output, final.name, built.tag)
        result = replace(result, gpus=plan.gpus, expect_tolerance=plan.expect_tolerance,
                         notes=list(plan.notes))
        atomic_write(staging / "replay.json", result.to_json())
    return final


def plan_ahead(manifest: Manifest, engine: Engine, host_gpus: Gpus, cpu: bool,
               image_env: Mapping[str, str] | None = None) -> preflight.Preflight:
    """The preflight on this host: raises PreflightError before any image is built or run."""
    runtimes = engine.gpu_runtimes() if preflight.used_gpu(manifest) and not cpu else ()
    return preflight.check(manifest, host_gpus, runtimes, cpu, image_env)


def container_spec(
    manifest: Manifest,
    built: BuiltImage,
    mounts: tuple[Mount, ...],
    timeout_s: float,
    memory: str | None = None,
    plan: preflight.Preflight = _AS_CAPTURED,
) -> ContainerSpec:
    """The hardened container that replays `manifest`'s command."""
    _refuse_masked_arguments(manifest.run.argv)
    state_dir = f"{render.PROJECT_DIR}/{STATE_DIR}"
    env = seeding.process_env(manifest.determinism, render.SHIM_DIR, state_dir, manifest.run.env)
    env.update(plan.env)
    env["HOME"] = "/tmp"
    env["PATH"] = f"{render.ENV_DIR}/bin:/usr/local/bin:/usr/bin:/bin"
    return ContainerSpec(
        image=built.tag,
        argv=render.container_argv(manifest.run.argv, manifest.python.executable),
        env=env,
        workdir=render.container_workdir(manifest),
        mounts=mounts,
        writable_dir=render.PROJECT_DIR,
        timeout_s=timeout_s,
        memory=memory,
        gpu_ids=plan.gpu_ids,
        gpu_count=plan.gpu_count,
    )


def _refuse_masked_arguments(argv: tuple[str, ...]) -> None:
    """Never run a command whose secret arguments were masked at capture: it is not the same run."""
    masked = [i for i, arg in enumerate(argv) if SECRET_MASK in arg]
    if masked:
        raise ReplayError(
            f"argument {masked[0]} of the recorded command held a secret, which reprobox never "
            f"stores: {' '.join(argv)}",
            hint="let the script read the secret from an environment variable instead "
            "(replays run offline, so a credential is rarely needed)",
        )


def project_root(bundle: Bundle) -> Path:
    """The project a bundle was captured in: the folder above `.reprobox/runs/`."""
    runs = bundle.path.parent
    if runs.name != "runs" or runs.parent.name != ".reprobox":
        raise BundleError(
            f"{bundle.path}: not inside a project's .reprobox/runs/",
            hint="replay bundles where they were captured",
        )
    return runs.parent.parent


def _input_mounts(bundle: Bundle, manifest: Manifest) -> tuple[Mount, ...]:
    """Declared inputs, checked against their recorded digests, mounted read-only."""
    if not manifest.inputs:
        return ()
    project = project_root(bundle)
    mounts = []
    for record in manifest.inputs:
        path = project / record.path
        if not path.is_file():
            raise ReplayError(f"input {path} is missing", hint="restore it where it was captured")
        if sha256_file(path) != record.sha256:
            raise ReplayError(
                f"input {path} changed since capture (sha256 differs)",
                hint="restore the original file; a replay on other data proves nothing",
            )
        _check_readable(path)
        mounts.append(Mount(str(path), f"{render.PROJECT_DIR}/{record.path}", read_only=True))
    return tuple(mounts)


def _check_readable(path: Path) -> None:
    """The replay runs as uid 1000, which can read a mounted file only by its own mode bits."""
    info = path.stat()
    if not (
        info.st_mode & stat.S_IROTH or (info.st_uid == render.UID and info.st_mode & stat.S_IRUSR)
    ):
        raise ReplayError(
            f"input {path} is not readable by the replay's user (uid {render.UID})",
            hint=f"make it world-readable: chmod o+r {path}",
        )


def _replay_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def _run(
    engine: Engine,
    spec: ContainerSpec,
    fetch: list[str],
    staging: Path,
    on_output: Callable[[bytes], None],
    replay_id: str,
    image: str,
) -> ReplayResult:
    fetched = staging / "fetched"
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    clock = time.monotonic()
    outcome = engine.run(spec, on_output, fetch=fetch, fetch_into=fetched)
    duration = round(time.monotonic() - clock, 3)
    atomic_write(staging / "logs" / "stdout.log", outcome.stdout)  # as capture writes them
    atomic_write(staging / "logs" / "stderr.log", outcome.stderr)
    state = seeding.read_state(_local(fetched, spec.workdir, fetch[-1]))
    _collect_outputs(fetched, spec.workdir, fetch[:-1], staging / "outputs")
    shutil.rmtree(fetched, ignore_errors=True)
    return ReplayResult(
        replay_id, image, outcome.exit_code, outcome.timed_out, duration, started, state
    )


def _local(root: Path, workdir: str, container_path: str) -> Path:
    """Where the engine put a fetched path: relative to the workdir when under it, else to /."""
    path = PurePosixPath(container_path)
    base = PurePosixPath(workdir) if path.is_relative_to(workdir) else PurePosixPath("/")
    return root / path.relative_to(base)


def _collect_outputs(fetched: Path, workdir: str, paths: list[str], outputs: Path) -> None:
    for container_path in paths:
        local = _local(fetched, workdir, container_path)
        if local.is_file():
            target = outputs / Path(container_path).relative_to(render.PROJECT_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(local), target)


def read_result(replay_dir: Path) -> ReplayResult:
    """The record of a finished replay."""
    try:
        return ReplayResult(**json.loads((replay_dir / "replay.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(
            f"{replay_dir}: not a complete replay ({exc})", hint="run `reprobox replay` again"
        ) from None


def compare_replay(bundle: Bundle, replay_dir: Path | None = None) -> tuple[Path, Comparison]:
    """Compare a replay (default: the newest) with the original; writes comparison.json."""
    manifest = bundle.manifest()
    replays = bundle.replays()
    if replay_dir is None:
        if not replays:
            raise BundleError(f"{bundle.path}: no replays yet", hint="run `reprobox replay` first")
        replay_dir = replays[-1]
    result = read_result(replay_dir)
    notes = _notes(manifest, bundle, result)
    outputs = manifest.outputs
    if result.expect_tolerance:
        outputs = tuple(_cross_device(output) for output in outputs)
        notes.append(f"judged within rtol={CROSS_DEVICE_RTOL:g}, atol={CROSS_DEVICE_ATOL:g} "
                     "(or the output's own, if looser), not bitwise")
    if outputs:
        comparison = compare(bundle.outputs_dir, replay_dir / "outputs", outputs, notes)
    else:
        comparison = _compare_stdout(bundle, replay_dir, notes)
    if result.timed_out or result.exit_code != manifest.run.exit_code:
        # A run that ended otherwise did not reproduce, whatever files it left behind.
        comparison = replace(comparison, verdict="different")
    atomic_write(replay_dir / "comparison.json", comparison.to_json() + "\n")
    return replay_dir, comparison


def _cross_device(output: Output) -> Output:
    return replace(output, rtol=max(output.rtol, CROSS_DEVICE_RTOL),
                   atol=max(output.atol, CROSS_DEVICE_ATOL))


def _compare_stdout(bundle: Bundle, replay_dir: Path, notes: list[str]) -> Comparison:
    """With no output files, what the run printed is the only evidence: compare that."""
    expected = bundle.logs_dir / "stdout.log"
    if not expected.is_file():
        return combine([], [*notes, "the run recorded no outputs and no stdout log"])
    record = Output("stdout", sha256_file(expected), expected.stat().st_size)
    result = compare_file(expected, replay_dir / "logs" / "stdout.log", record)
    return combine([result], [*notes, "no output files were recorded: compared what it printed"])


def _notes(manifest: Manifest, bundle: Bundle, result: ReplayResult) -> list[str]:
    notes = list(result.notes)
    if result.timed_out:
        notes.append("the replay timed out and was stopped")
    if result.exit_code != manifest.run.exit_code:
        notes.append(
            f"exit code differs: original {manifest.run.exit_code}, replay {result.exit_code}"
        )
    python_note = _python_note(bundle)
    if python_note:
        notes.append(python_note)
    notes.extend(_state_notes(manifest.determinism.state, result.state))
    return notes


_VERSION_KEYS = ("numpy.version", "torch.version")  # Python: see BuiltImage.python_note
_RNG_KEYS = {"random.state_sha256": "Python's random", "numpy.state_sha256": "numpy's global RNG"}


def _state_notes(original: Mapping[str, Scalar], replayed: Mapping[str, Scalar]) -> list[str]:
    """What the shim saw differ between the two runs, in words."""
    notes = [
        f"{key} differs: original {original.get(key)}, replay {replayed.get(key)}"
        for key in _VERSION_KEYS
        if original.get(key) != replayed.get(key)
    ]
    for key, name in _RNG_KEYS.items():
        if key in original and original.get(key) != replayed.get(key):
            notes.append(f"{name} ended in another state: the run drew other random numbers")
    return notes


def _python_note(bundle: Bundle) -> str | None:
    try:
        return read_built(bundle).python_note
    except BundleError:
        return None
