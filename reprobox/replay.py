"""Replay a bundle's command in its image, hardened and seeded, and collect what it wrote.

Each replay lands in `replays/<replay-id>/` (outputs, logs, replay.json, environment.json,
comparison.json), staged and renamed into place only when complete. `environment.json` is what
the replay ran on, recorded from inside a container made like the replay's; comparisons weigh it
against the other run's to say which difference most likely explains a different result.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from reprobox import bundle as bundle_io
from reprobox import envdiff, preflight, render, seeding
from reprobox.build import BuiltImage, read_built
from reprobox.bundle import Bundle
from reprobox.compare import Comparison, OutputComparison, combine, compare, compare_file
from reprobox.compare import tolerances as tolerance_rules
from reprobox.compare.tolerances import Tolerance
from reprobox.engine import ContainerSpec, Engine, Mount
from reprobox.errors import (
    BundleError,
    ProbeUnavailable,
    ReplayError,
    ReproboxError,
    UsageError,
)
from reprobox.fileio import atomic_write, sha256_file, staged_dir
from reprobox.manifest import SECRET_MASK, Gpus, Manifest, Output, Scalar

STATE_DIR = ".reprobox-state"
ENVIRONMENT_FILE = "environment.json"
PROBE_DIR = "/opt/reprobox/probe"  # where the probe scripts are mounted, read-only
PROBE_TIMEOUT_S = 120.0
# A reference output whose digest is not known (a replay's): never equal to a file's sha256, so
# the comparison goes on to the reference's bytes, which are at hand.
_DIGEST_UNKNOWN = ""
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
    seed: int | None = None  # the seed it started from; None: the captured one (older replays)
    where: str = ""  # what ran it, where not this host's Docker: "Slurm job 8 task 0 on node1"

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
    return replay_many(bundle, engine, on_output, 1, timeout_s, memory, host_gpus, cpu)[0]


def replay_many(
    bundle: Bundle,
    engine: Engine,
    on_output: Callable[[bytes], None],
    count: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory: str | None = None,
    host_gpus: Gpus = NO_GPU,
    cpu: bool = False,
    seeds: Sequence[int] = (),
) -> list[Path]:
    """`count` replays in the same image, one after another; their folders, oldest first.

    With `seeds`, one replay per seed instead (a seed sweep), each started from its seed.
    The environment is probed once, before the first (the image and the host are the same for
    all); each replay's environment.json adds the state its own run ended in.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError(f"--repeat {count!r}: the number of replays must be at least 1",
                         hint="--repeat 2 or more measures run-to-run variation")
    if seeds and count > 1:
        raise UsageError("--repeat and --seeds together: choose one",
                         hint="--seeds replays once per seed; --repeat N replays one seed N times")
    manifest = bundle.manifest()
    engine.ping()
    runtimes = _gpu_runtimes(manifest, engine, cpu)
    preflight.check(manifest, host_gpus, runtimes, cpu)  # refuse before looking for the image
    built = read_built(bundle)
    if not engine.has_image(built.tag):
        raise ReplayError(
            f"image {built.tag} is not present",
            hint="run `reprobox build` to rebuild it from the bundle",
        )
    # again, now with what the image itself requires (a CUDA base's NVIDIA_REQUIRE_CUDA)
    plan = preflight.check(manifest, host_gpus, runtimes, cpu, engine.image_env(built.tag))
    spec = container_spec(manifest, built, input_mounts(bundle, manifest), timeout_s, memory,
                          plan)
    fetch = [f"{render.PROJECT_DIR}/{path}" for path in fetched_paths(manifest)]
    how = _Replaying(spec, fetch, plan, host_gpus, _probe_environment(engine, spec))
    if not seeds:
        return [_replay_once(bundle, engine, how, on_output) for _ in range(count)]
    return [_replay_once(bundle, engine, replace(how, spec=seeded_spec(spec, seed), seed=seed),
                         on_output) for seed in seeds]


def fetched_paths(manifest: Manifest) -> list[str]:
    """What a replay copies out of its container, relative to the project: the recorded
    outputs, then the shim's state folder (last)."""
    return [*(output.path for output in manifest.outputs), STATE_DIR]


def seeded_spec(spec: ContainerSpec, seed: int) -> ContainerSpec:
    """`spec` started from `seed`: the variables the seed sets, and nothing else, changed."""
    return replace(spec, env={**spec.env, **seeding.seed_env(seed)})


@dataclass(frozen=True, slots=True)
class _Replaying:
    """What every replay of one `replay_many` shares."""

    spec: ContainerSpec
    fetch: list[str]
    plan: preflight.Preflight
    host_gpus: Gpus
    probed: Mapping[str, Any] | str  # the container probe's report, or why there is none
    seed: int | None = None  # a sweep's seed; None: the captured one


def _replay_once(bundle: Bundle, engine: Engine, how: _Replaying,
                 on_output: Callable[[bytes], None]) -> Path:
    final = bundle.replays_dir / new_replay_id()
    with staged_dir(final) as staging:
        result = _run(engine, how.spec, how.fetch, staging, on_output, final.name, how.spec.image)
        result = replace(result, gpus=how.plan.gpus, expect_tolerance=how.plan.expect_tolerance,
                         notes=list(how.plan.notes), seed=how.seed)
        environment = replay_environment(how.probed, result, how.host_gpus)
        atomic_write(staging / "replay.json", result.to_json())
        atomic_write(staging / ENVIRONMENT_FILE, environment.to_json())
    return final


def _probe_environment(engine: Engine, spec: ContainerSpec) -> Mapping[str, Any] | str:
    """The container probe's report, or why there is none: a replay goes on without it.

    It runs in a container made like the replay's (image, env, limits, GPUs), with the probe
    scripts mounted read-only: the image needs nothing of its own for it.
    """
    mounts = tuple(Mount(str(path), f"{PROBE_DIR}/{path.name}", read_only=True)
                   for path in envdiff.PROBE_SCRIPTS)
    probe = replace(spec, argv=envdiff.probe_command(PROBE_DIR), mounts=mounts,
                    writable_dir=None, workdir="/tmp", timeout_s=PROBE_TIMEOUT_S)
    printed: list[bytes] = []
    try:
        outcome = engine.run(probe, printed.append)
    except ReproboxError as exc:
        return f"the environment probe could not run: {exc}"
    return probe_report(outcome.exit_code or (-1 if outcome.timed_out else 0),
                        outcome.stdout or b"".join(printed), outcome.stderr or b"".join(printed))


def probe_report(exit_code: int, stdout: bytes, stderr: bytes) -> Mapping[str, Any] | str:
    """The environment probe's report from what it printed, or why there is none."""
    if exit_code != 0:
        said = _last_line(stderr)
        return f"the environment probe failed (exit {exit_code}): {said[:200]}"
    try:
        report = json.loads(_last_line(stdout))
    except ValueError:
        report = None
    return report if isinstance(report, dict) else "the environment probe printed no report"


def _last_line(output: bytes) -> str:
    lines = output.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def replay_environment(probed: Mapping[str, Any] | str, result: ReplayResult,
                       host_gpus: Gpus) -> envdiff.Environment:
    """What a replay ran on: the probe's report (or why there is none) and its end state."""
    if isinstance(probed, str):
        return envdiff.of_state(result.state, probed)
    try:
        return envdiff.from_probe(probed, result.state, result.gpus, host_gpus)
    except ProbeUnavailable as exc:
        return envdiff.of_state(result.state, f"the environment probe: {exc}")


def plan_ahead(manifest: Manifest, engine: Engine, host_gpus: Gpus,
               cpu: bool) -> preflight.Preflight:
    """The preflight on this host: raises PreflightError before any image is built or run."""
    return preflight.check(manifest, host_gpus, _gpu_runtimes(manifest, engine, cpu), cpu)


def _gpu_runtimes(manifest: Manifest, engine: Engine, cpu: bool) -> tuple[str, ...]:
    """Docker's NVIDIA runtimes, asked only when the replay will want GPUs."""
    return engine.gpu_runtimes() if preflight.used_gpu(manifest) and not cpu else ()


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
            hint="replay bundles where they were captured, or from an unpacked archive",
        )
    return runs.parent.parent


UNPACKED_INPUTS = "inputs"  # an unpacked archive keeps the declared inputs beside its bundle


def inputs_root(bundle: Bundle) -> Path:
    """Where a bundle's declared inputs live: its project, or beside it in an unpacked archive."""
    beside = bundle.path.parent / UNPACKED_INPUTS
    runs = bundle.path.parent
    if not (runs.name == "runs" and runs.parent.name == ".reprobox") and beside.is_dir():
        return beside
    return project_root(bundle)


def input_mounts(bundle: Bundle, manifest: Manifest) -> tuple[Mount, ...]:
    """Declared inputs, checked against their recorded digests, mounted read-only."""
    if not manifest.inputs:
        return ()
    project = inputs_root(bundle)
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


def new_replay_id() -> str:
    """Time to the millisecond, so that replays made in one second still sort in order."""
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


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


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One side of a comparison: a bundle's original run, or one of its replays."""

    bundle: Bundle
    replay_dir: Path | None  # None: the original run
    exit_code: int
    timed_out: bool = False
    state: Mapping[str, Scalar] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # a replay's preflight notes
    expect_tolerance: bool = False
    gpus: bool = False

    @property
    def name(self) -> str:
        return "original" if self.replay_dir is None else f"replay {self.replay_dir.name}"

    @property
    def outputs_dir(self) -> Path:
        return self.bundle.outputs_dir if self.replay_dir is None else self.replay_dir / "outputs"

    @property
    def logs_dir(self) -> Path:
        return self.bundle.logs_dir if self.replay_dir is None else self.replay_dir / "logs"


def original_run(bundle: Bundle) -> RunRecord:
    """The run a bundle captured."""
    manifest = bundle.manifest()
    return RunRecord(bundle, None, manifest.run.exit_code, state=manifest.determinism.state)


def replay_run(bundle: Bundle, replay_dir: Path) -> RunRecord:
    """One replay of `bundle`, from its replay.json."""
    result = read_result(replay_dir)
    return RunRecord(bundle, replay_dir, result.exit_code, result.timed_out, result.state,
                     tuple(result.notes), result.expect_tolerance, result.gpus)


def open_run(arg: str, cwd: Path | None = None) -> RunRecord:
    """A run named on the command line: a replay folder, or a bundle (folder or run id)."""
    path = (cwd or Path.cwd()) / arg
    if (path / "replay.json").is_file():
        folder = path.resolve()
        owner = folder.parent.parent
        if folder.parent.name != "replays" or not (owner / "manifest.yaml").is_file():
            raise BundleError(f"{arg}: a replay folder outside its bundle",
                              hint="replays are compared where they are: "
                              ".reprobox/runs/<run-id>/replays/<replay-id>")
        return replay_run(Bundle(owner), folder)
    try:
        return original_run(bundle_io.find(arg, cwd))
    except BundleError:
        raise BundleError(f"{arg}: neither a bundle nor a replay folder",
                          hint="name a run (.reprobox/runs/<run-id> or its id) or a replay "
                          "(.reprobox/runs/<run-id>/replays/<replay-id>)") from None


def compare_replay(bundle: Bundle, replay_dir: Path | None = None,
                   tolerances: Sequence[Tolerance] = ()) -> tuple[Path, Comparison]:
    """Compare a replay (default: the newest) with the original; writes comparison.json.
    `tolerances` (by glob) replace the recorded tolerances of the outputs they match."""
    if replay_dir is None:
        replays = bundle.replays()
        if not replays:
            raise BundleError(f"{bundle.path}: no replays yet", hint="run `reprobox replay` first")
        replay_dir = replays[-1]
    comparison = compare_runs(original_run(bundle), replay_run(bundle, replay_dir), tolerances)
    atomic_write(replay_dir / "comparison.json", comparison.to_json() + "\n")
    return replay_dir, comparison


def compare_runs(reference: RunRecord, other: RunRecord,
                 tolerances: Sequence[Tolerance] = ()) -> Comparison:
    """Compare run `other` with run `reference`: the reference's outputs are the expected ones,
    judged by the tolerances its bundle recorded (or `tolerances`, by glob, where they match).

    Either may be the original or a replay, of the same bundle or not. Writes nothing.
    """
    manifest = reference.bundle.manifest()
    environments = (environment_of(reference), environment_of(other))
    unmatched = _unmatched(reference, other, manifest)
    notes = [*_notes(reference, other), *_record_notes(reference, other, environments, unmatched)]
    outputs = _reference_outputs(reference, manifest)
    if _loosened(reference, other):
        outputs = tuple(_cross_device(output) for output in outputs)
        notes.append(f"judged within rtol={CROSS_DEVICE_RTOL:g}, atol={CROSS_DEVICE_ATOL:g} "
                     "(or the output's own, if looser), not bitwise")
    if manifest.outputs:
        by_digest = _digest_only(other, outputs)
        comparison = compare(reference.outputs_dir, other.outputs_dir,
                             [o for o in outputs if o.path not in by_digest], notes, tolerances)
        comparison = _with_digest_results(comparison, reference, by_digest)
    else:
        comparison = _compare_stdout(reference, other, notes, tolerances)
    ended_otherwise = other.timed_out or reference.timed_out or (
        other.exit_code != reference.exit_code)
    if ended_otherwise or unmatched:
        # A run that ended otherwise, or wrote other files, did not reproduce.
        comparison = replace(comparison, verdict="different")
    return comparison.with_environment(envdiff.differences(*environments))


def environment_of(run: RunRecord) -> envdiff.Environment:
    """What a run ran on: its manifest's record, or its replay's environment.json."""
    if run.replay_dir is None:
        return envdiff.of_manifest(run.bundle.manifest())
    path = run.replay_dir / ENVIRONMENT_FILE
    try:
        return envdiff.Environment.from_json(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        return envdiff.of_state(run.state, "the replay recorded no environment.json")
    except (OSError, BundleError) as exc:
        return envdiff.of_state(run.state, str(exc))


def _reference_outputs(reference: RunRecord, manifest: Manifest) -> tuple[Output, ...]:
    """The recorded outputs; for a replay, those it wrote, known by their bytes, not a digest."""
    if reference.replay_dir is None:
        return manifest.outputs
    return tuple(replace(output, sha256=_DIGEST_UNKNOWN, stored=True)
                 for output in manifest.outputs
                 if (reference.outputs_dir / output.path).is_file())


def _unmatched(reference: RunRecord, other: RunRecord, manifest: Manifest) -> list[str]:
    """Recorded outputs a reference replay did not write and the other run did."""
    if reference.replay_dir is None:
        return []  # the original's records stand, copy or no copy
    return [output.path for output in manifest.outputs
            if not (reference.outputs_dir / output.path).is_file()
            and (other.outputs_dir / output.path).is_file()]


def _loosened(reference: RunRecord, other: RunRecord) -> bool:
    """Whether bitwise equality cannot be expected: one of them ran on another device.

    Two replays made alike (both on the CPU, say) can still be expected to agree bit for bit.
    """
    if not (reference.expect_tolerance or other.expect_tolerance):
        return False
    both_replays = reference.replay_dir is not None and other.replay_dir is not None
    alike = (reference.expect_tolerance, reference.gpus) == (other.expect_tolerance, other.gpus)
    return not (both_replays and alike)


def _cross_device(output: Output) -> Output:
    return replace(output, rtol=max(output.rtol, CROSS_DEVICE_RTOL),
                   atol=max(output.atol, CROSS_DEVICE_ATOL))


def _digest_only(other: RunRecord, outputs: Sequence[Output]) -> dict[str, Output]:
    """Outputs the other side, an original run, kept only by digest (over the size cap)."""
    if other.replay_dir is not None:
        return {}
    recorded = {o.path: o for o in other.bundle.manifest().outputs if not o.stored}
    return {o.path: recorded[o.path] for o in outputs if o.path in recorded}


def _with_digest_results(comparison: Comparison, reference: RunRecord,
                         by_digest: Mapping[str, Output]) -> Comparison:
    """`comparison` plus the outputs judged by the other side's recorded sha256 alone."""
    if not by_digest:
        return comparison
    results = [_by_digest(reference.outputs_dir / path, record)
               for path, record in by_digest.items()]
    combined = combine([*comparison.outputs, *results], comparison.notes)
    return replace(combined, curves=comparison.curves)


def _by_digest(path: Path, record: Output) -> OutputComparison:
    if not path.is_file():
        return OutputComparison(record.path, "missing", "bytes", "not written on this side")
    if sha256_file(path) == record.sha256:
        return OutputComparison(record.path, "identical", "bytes", "sha256 matches the record")
    return OutputComparison(record.path, "different", "bytes",
                            "sha256 differs from the record, which holds only the digest "
                            "(the file was over the size cap), so nothing more can be said")


def _compare_stdout(reference: RunRecord, other: RunRecord, notes: list[str],
                    tolerances: Sequence[Tolerance] = ()) -> Comparison:
    """With no output files, what the run printed is the only evidence: compare that."""
    expected = reference.logs_dir / "stdout.log"
    if not expected.is_file():
        return combine([], [*notes, "the run recorded no outputs and no stdout log"])
    record = Output("stdout", sha256_file(expected), expected.stat().st_size)
    (record,) = tolerance_rules.apply((record,), tolerances)
    result = compare_file(expected, other.logs_dir / "stdout.log", record)
    return combine([result], [*notes, "no output files were recorded: compared what it printed"])


def _notes(reference: RunRecord, other: RunRecord) -> list[str]:
    names = _names(reference, other)
    notes = list(dict.fromkeys([*reference.notes, *other.notes]))
    for run, name in zip((reference, other), names, strict=True):
        if run.timed_out:
            notes.append(f"the {name} timed out and was stopped")
    if other.exit_code != reference.exit_code:
        notes.append(f"exit code differs: {names[0]} {reference.exit_code}, "
                     f"{names[1]} {other.exit_code}")
    if (reference.replay_dir is None) != (other.replay_dir is None):
        python_note = _python_note(reference.bundle)
        if python_note:
            notes.append(python_note)
    notes.extend(_state_notes(reference.state, other.state, names))
    return notes


def _record_notes(reference: RunRecord, other: RunRecord,
                  environments: tuple[envdiff.Environment, envdiff.Environment],
                  unmatched: Sequence[str]) -> list[str]:
    """What a replay could not record of its environment, and outputs the reference lacks."""
    notes = [note for run, environment in zip((reference, other), environments, strict=True)
             if run.replay_dir is not None for note in environment.notes]
    if unmatched:
        names = _names(reference, other)
        notes.append(f"the {names[0]} did not write {', '.join(unmatched)}; the {names[1]} did")
    return notes


def _names(reference: RunRecord, other: RunRecord) -> tuple[str, str]:
    """"original" and "replay" when that says it all, else the replays' ids."""
    if reference.replay_dir is None and other.replay_dir is not None:
        return "original", "replay"
    if reference.name == other.name:
        return "first", "second"
    return reference.name, other.name


_VERSION_KEYS = ("numpy.version", "torch.version")  # Python: see BuiltImage.python_note
_RNG_KEYS = {"random.state_sha256": "Python's random", "numpy.state_sha256": "numpy's global RNG"}


def _state_notes(original: Mapping[str, Scalar], replayed: Mapping[str, Scalar],
                 names: tuple[str, str] = ("original", "replay")) -> list[str]:
    """What the shim saw differ between the two runs, in words."""
    notes = [
        f"{key} differs: {names[0]} {original.get(key)}, {names[1]} {replayed.get(key)}"
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
