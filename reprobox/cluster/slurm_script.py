"""A replay → the Slurm batch script that runs it on a node: pure, the same input the same bytes.

One script serves one seed or a sweep (a job array, one task per seed). Each task runs the
image with Docker, or with Apptainer where the node has it, hardened as a local replay is, and
leaves its results in `<work>/task-<n>/` for `slurm_replay` to gather. `reprobox export slurm`
writes the same script without submitting it.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace

import jinja2

from reprobox import render, seeding
from reprobox.cluster import apptainer
from reprobox.engine import ContainerSpec, cli_flags, memory_bytes
from reprobox.errors import UsageError
from reprobox.manifest import Manifest

ENGINES = ("auto", "docker", "apptainer")
MAX_TASKS = 1000  # Slurm's default MaxArraySize is 1001
_TIME = re.compile(r"\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2}"
                   r"|UNLIMITED|INFINITE", re.IGNORECASE)
_SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:,[A-Za-z0-9][A-Za-z0-9_.-]*)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reprobox", "templates"), undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True, autoescape=False,
)


@dataclass(frozen=True, slots=True)
class SlurmOptions:
    """What the job asks Slurm for; None leaves it to the partition's defaults."""

    partition: str | None = None
    gpus: int = 0
    time: str | None = None  # Slurm's format: minutes, [D-]HH:MM[:SS], ...
    cpus: int = 1
    engine: str = "auto"  # auto: Apptainer where the node has it, else Docker

    def __post_init__(self) -> None:
        if self.partition is not None and not _SLURM_NAME.fullmatch(self.partition):
            raise UsageError(f"--partition {self.partition!r} is not a Slurm partition name",
                             hint="`sinfo --summarize` lists the partitions")
        if self.time is not None and not _TIME.fullmatch(self.time):
            raise UsageError(f"--time {self.time!r} is not a Slurm time limit",
                             hint="minutes (90), HH:MM:SS (01:30:00) or D-HH:MM (1-12:00)")
        if self.engine not in ENGINES:
            raise UsageError(f"container engine {self.engine!r} is not one of "
                             f"{', '.join(ENGINES)}", hint="auto picks Apptainer, then Docker")


@dataclass(frozen=True, slots=True)
class JobFiles:
    """Where the job finds and leaves things: absolute paths on storage the nodes share."""

    work: str  # the job's folder; task-<n>/ under it
    image_tar: str  # `docker save` of the image, for a node that lacks it and for Apptainer
    sif: str  # the Apptainer image built from image_tar, once
    # the environment probe's scripts; None: no probe, and WORK may not exist yet (an export)
    probe_dir: str | None = None
    # Slurm's own log of each task; it must be in a folder that exists when the job starts
    log_pattern: str = "slurm-%A_%a.out"  # relative: the folder sbatch was run in
    several_images: bool = False  # image_tar holds others too (an archive's): Apptainer is told


def batch_script(manifest: Manifest, run_id: str, spec: ContainerSpec, seeds: Sequence[int],
                 options: SlurmOptions, files: JobFiles, fetch: Sequence[str]) -> str:
    """The batch script replaying `spec` once per seed; `fetch`: paths under the project."""
    seeds = _checked_seeds(seeds, manifest.determinism.seed)
    env = {name: value for name, value in spec.env.items() if name not in seeding.SEED_VARS}
    spec = replace(spec, env=env)
    return _TEMPLATES.get_template("slurm-job.sh.j2").render(
        run_id=run_id, seed_count=len(seeds),
        seeds_text=", ".join(map(str, seeds)), command=_comment(shlex.join(manifest.run.argv)),
        image=spec.image, image_q=shlex.quote(spec.image), header=_header(files, spec.image),
        job_name=f"reprobox-{run_id}"[:64], log_pattern=shlex.quote(files.log_pattern),
        cpus=options.cpus, partition=options.partition, gpus=options.gpus, time=options.time,
        mem=_slurm_memory(spec.memory), memory_set=spec.memory is not None,
        array=f"0-{len(seeds) - 1}" if len(seeds) > 1 else None, probe=files.probe_dir is not None,
        submitted=files.probe_dir is not None,
        work=shlex.quote(files.work), image_tar=shlex.quote(files.image_tar),
        sif=shlex.quote(files.sif), seeds=" ".join(map(str, seeds)), engine=options.engine,
        env_lines=" ".join(shlex.quote(line) for line in _env_lines(env)),
        docker_create=_words([*cli_flags(spec), spec.image, *spec.argv]),
        docker_probe=_docker_probe(spec, files), timeout_s=_seconds(spec.timeout_s),
        fetch=" ".join(shlex.quote(path) for path in fetch), project_dir=render.PROJECT_DIR,
        **_apptainer_parts(spec, files, options.gpus > 0),
    )


def _checked_seeds(seeds: Sequence[int], captured: int) -> list[int]:
    if len(seeds) > MAX_TASKS:
        raise UsageError(f"{len(seeds)} seeds: a Slurm job array holds at most {MAX_TASKS}",
                         hint="split the sweep into several submissions")
    return seeding.resolved_seeds(seeds, captured)


def _env_lines(env: dict[str, str]) -> list[str]:
    """NAME=VALUE lines as Docker's --env-file reads them: literally, one per line."""
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name) or "\n" in value or "\0" in value:
            raise UsageError(f"environment variable {name!r} cannot be passed to a job "
                             "(an odd name, or a newline in its value)",
                             hint="drop it from the run's environment and capture again")
    return [f"{name}={value}" for name, value in sorted(env.items())]


def _header(files: JobFiles, image: str) -> list[str]:
    if files.probe_dir is None:
        return ["Written by `reprobox export slurm`: submit it with `sbatch FILE`. Nodes without",
                "the image load it (Docker) or build a SIF (Apptainer) from IMAGE_TAR; make it",
                f"on a host that has the image: docker save {shlex.quote(image)} -o "
                f"{shlex.quote(files.image_tar)}",
                "Outputs land in WORK/task-<n>/fetched/, the run's streams beside them; Slurm's",
                "log in the folder sbatch ran in."]
    return ["Written and submitted by `reprobox replay --on slurm`, which gathers the results."]


def _docker_probe(spec: ContainerSpec, files: JobFiles) -> str:
    """`docker run` options, image and command of the environment probe, as in a replay."""
    if files.probe_dir is None:
        return ""
    probe = _probe_spec(spec, files.probe_dir)
    return _words([*cli_flags(probe), probe.image, *probe.argv])


def _probe_spec(spec: ContainerSpec, probe_dir: str) -> ContainerSpec:
    # imported here: envdiff pulls in the comparison code, which a script writer rarely needs
    from reprobox import envdiff
    from reprobox.engine import Mount

    folder = "/opt/reprobox/probe"
    mounts = tuple(Mount(f"{probe_dir}/{path.name}", f"{folder}/{path.name}")
                   for path in envdiff.PROBE_SCRIPTS)
    return replace(spec, argv=envdiff.probe_command(folder), mounts=mounts, writable_dir=None,
                   workdir="/tmp")


def _apptainer_parts(spec: ContainerSpec, files: JobFiles, gpus: bool) -> dict[str, object]:
    """The Apptainer half of the script; paths are quoted here, `$OUT` left to the shell."""
    project, scratch = '"$OUT"/fetched', '"$OUT"/scratch'
    sif, image_tar = shlex.quote(files.sif), shlex.quote(files.image_tar)
    if files.several_images:  # docker-archive:PATH:REFERENCE picks one image of several
        image_tar += ":" + shlex.quote(spec.image)
    prepare = [
        *_or_fail(apptainer.build_sif_lines(image_tar, sif), "apptainer could not build $SIF"),
        *_or_fail(apptainer.prepare_project_lines(sif, project),
                  "apptainer could not copy the image's project out"),
        *_or_fail(apptainer.bind_point_lines(spec, project),
                  "cannot make the inputs' bind points"),
        f"mkdir -p {scratch} || fail \"cannot make $OUT/scratch\"",
    ]
    parts: dict[str, object] = {
        "apptainer_prepare": prepare,
        "apptainer_env": apptainer.env_export_lines(spec),
        "apptainer_exec": " ".join(apptainer.exec_words(spec, sif, project, gpus,
                                                        scratch_dir=scratch)),
        "apptainer_probe": "",
    }
    if files.probe_dir is not None:
        probe = _probe_spec(spec, files.probe_dir)
        parts["apptainer_probe"] = " ".join(apptainer.exec_words(probe, sif, None, gpus,
                                                                 scratch_dir=scratch))
    return parts


def _or_fail(lines: list[str], message: str) -> list[str]:
    """A helper's lines, the whole command failing the task with `message` (none: none)."""
    if not lines:
        return []
    return [*lines[:-1], f"{lines[-1]} || fail \"{message} on $(hostname)\""]


def _slurm_memory(limit: str | None) -> str | None:
    """Docker's memory limit as sbatch's --mem (whole MiB, rounded up): Slurm holds the job to
    it, which an Apptainer replay has no other way to get."""
    return None if limit is None else f"{-(-memory_bytes(limit) // (1 << 20))}M"


def _comment(text: str) -> str:
    """One line of a comment: a line break would end it (and sbatch's #SBATCH lines)."""
    return text.replace("\n", " ").replace("\r", " ")


def _words(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def _seconds(timeout_s: float | None) -> str:
    # timeout(1): 0 means no limit, so a fraction of a second is rounded up, never down to 0
    return f"{math.ceil(timeout_s)}s" if timeout_s else "0"
