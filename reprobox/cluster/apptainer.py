"""A replay's container spec → Apptainer: job-script lines, `apptainer exec`, a definition file.

Pure: strings in, strings out, the same bytes for the same input. Apptainer runs the image that
`docker save` wrote (a docker-archive tar) as a read-only SIF, so this replay differs from a
Docker one where Apptainer cannot do otherwise, and what it writes says so:

- the network is the host's unless `isolate_network` asks for `--net --network none`, which a
  site may refuse (it needs network namespaces);
- memory, pids and CPU limits are the batch scheduler's: Apptainer's own cgroup flags need
  cgroups v2 with systemd delegation, or root;
- the run is the calling user, not uid 1000, and $HOME is the empty one `--containall` makes:
  Apptainer refuses HOME from the environment (it warns and keeps its own);
- /app is a host folder holding a copy of the image's /app, since a SIF cannot be written to.

Shell words: every path parameter (`sif`, `image_tar`, `project_dir`, `scratch_dir`) is pasted
as it is, so pass `shlex.quote(path)` for a literal path or `'"$WORK"/replay'` to leave a
variable to the shell (its value must not hold a double quote: binds are CSV fields). Whatever
comes from the spec is quoted here. Each helper's lines are bash forming one command (an `if`
block or an `&&` list), whose status is the step's: append `|| exit 1` (or the like) to its last
line, since `set -e` does not stop inside an `&&` list.

Needs Apptainer >= 1.1.0 (`--no-eval`, so that `$`, quotes and backticks in values and
arguments reach the run literally, as with Docker).
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from reprobox import render, seeding
from reprobox.errors import UsageError

if TYPE_CHECKING:  # only the type: engine brings the Docker client with it
    from reprobox.engine import ContainerSpec
    from reprobox.manifest import Manifest

MIN_APPTAINER = "1.1.0"
# --containall: own PID and IPC namespaces, a clean environment, an empty $HOME and /tmp, a
# minimal /dev. --no-eval: values and arguments are not shell-evaluated in the container.
# --no-mount bind-paths: none of the `bind path` entries of the site's apptainer.conf.
EXEC_FLAGS = ("--containall", "--no-eval", "--no-mount", "bind-paths")
ENV_PREFIX = "APPTAINERENV_"  # reaches the container through --cleanenv, value untouched
COPY_TARGET = "/mnt"  # where the image's /app is copied to, inside the copying container
SCRIPT = "run-apptainer.sh"
IMAGE_TAR = "image.tar"
REFUSED_ENV = frozenset({"HOME"})
# What a calling shell may carry into the container: variables, and binds or files by the
# flags' environment twins. Both prefixes are read.
_INHERITED = ("APPTAINERENV_*", "SINGULARITYENV_*", *(
    f"{prefix}_{flag}" for prefix in ("APPTAINER", "SINGULARITY")
    for flag in ("BIND", "BINDPATH", "MOUNT", "HOME", "ENV_FILE", "OVERLAY", "OVERLAYIMAGE",
                 "SCRATCH", "SCRATCHDIR", "FUSESPEC", "CONTAINLIBS")))
_CLEAR_INHERITED = (f'for name in $(compgen -e); do case "$name" in {"|".join(_INHERITED)}) '
                    'unset "$name" ;; esac; done')
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEVICES = re.compile(r"[A-Za-z0-9,._:/-]*")  # indexes, GPU-/MIG- UUIDs
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
Bind = tuple[str, str, bool]  # source (shell text), target, read-only


def build_sif_lines(image_tar: str, sif: str) -> list[str]:
    """Build `sif` from the docker-archive `image_tar` unless it exists: one `if` block.

    Tasks racing on shared storage each build to their own `mktemp` file beside it, and the
    first to land keeps its place: a hard link fails where `sif` exists, atomically (on NFS
    too), so a SIF that tasks on other nodes run is never replaced under them (they would get
    stale file handles). Where the file system has no hard links, `mv -n` stands in, with a
    short window between its check and its rename. Every build is of the same image; the
    status is whether a SIF is there afterwards. Not `flock`: it would spare the extra builds
    but needs locks the file system may not give (Lustre without `-o flock`, NFSv3 without
    lockd), where a link needs nothing.
    """
    partial = '"$sif_partial"'
    return [
        f"if [ ! -s {sif} ]; then",
        f"  sif_partial=$(mktemp {sif}.partial.XXXXXX) &&",
        f"  {{ apptainer build --force {partial} docker-archive:{image_tar} &&",
        f"    {{ ln {partial} {sif} 2>/dev/null || mv -n {partial} {sif} 2>/dev/null || true; }}",
        f"    rm -f {partial}; [ -s {sif} ]; }}",
        "fi",
    ]


def prepare_project_lines(sif: str, project_dir: str) -> list[str]:
    """Copy the image's /app to `project_dir`, the folder the run writes in: one `&&` list.

    A folder left by an earlier attempt is replaced, so every replay starts from the image.
    """
    partial = f"{project_dir}.partial"
    copy = ["apptainer", "exec", *EXEC_FLAGS]
    return [
        f"rm -rf -- {partial} && mkdir -p -- {partial} &&",
        f"{_words(copy)} --mount {_mount_word(partial, COPY_TARGET, False)} {sif} "
        f"cp -R {render.PROJECT_DIR}/. {COPY_TARGET}/ &&",
        f"rm -rf -- {project_dir} && mv -- {partial} {project_dir}",
    ]


def bind_point_lines(spec: ContainerSpec, project_dir: str) -> list[str]:
    """Empty files where the spec binds inputs inside /app, so Apptainer finds bind points.

    Apptainer cannot make them in a host folder bound over /app (Docker makes them in its
    volume). Run after `prepare_project_lines`.
    """
    return _bind_points(_inside_project(spec), project_dir)


def apptainer_env(spec: ContainerSpec) -> dict[str, str]:
    """The replay's environment as Apptainer takes it, sorted, HOME left out.

    With GPUs, CUDA_VISIBLE_DEVICES is in the host's numbering: `--nv` hands over every GPU
    as the host numbers them, where Docker renumbers the ones it was asked for from 0.
    """
    env = {name: value for name, value in spec.env.items() if name not in REFUSED_ENV}
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"environment variable {name!r} cannot be given to Apptainer",
                             hint="drop it from the run's environment and capture again")
    if gives_gpus(spec):
        env["CUDA_VISIBLE_DEVICES"] = _host_devices(spec)
    return dict(sorted(env.items()))


def env_export_lines(spec: ContainerSpec) -> list[str]:
    """Shell lines exporting the replay's environment as APPTAINERENV_ variables.

    These pass through `--cleanenv` byte for byte (commas, spaces, quotes, newlines), unlike
    `--env`, which splits on commas in some versions; `--no-eval` keeps `$` literal. The first
    line unsets what the calling shell would otherwise carry in (see `_INHERITED`). With GPUs
    the host's own CUDA_VISIBLE_DEVICES (a scheduler's allocation) wins over the spec's.
    """
    env = apptainer_env(spec)
    devices = env.pop("CUDA_VISIBLE_DEVICES") if gives_gpus(spec) else None
    lines = [_CLEAR_INHERITED]
    lines += [f"export {ENV_PREFIX}{name}={shlex.quote(value)}" for name, value in env.items()]
    if devices is not None:
        lines.append(f'export {ENV_PREFIX}CUDA_VISIBLE_DEVICES='
                     f'"${{CUDA_VISIBLE_DEVICES-{devices}}}"')
    return lines


def exec_words(spec: ContainerSpec, sif: str, project_dir: str | None, gpus: bool, *,
               scratch_dir: str | None = None, isolate_network: bool = False) -> list[str]:
    """`apptainer exec` replaying `spec`, as shell words; run after `env_export_lines`.

    `project_dir` is bound over the spec's writable folder (None where it has none, as the
    environment probe). `scratch_dir` holds /tmp, /var/tmp and $HOME; without it they live in
    Apptainer's session directory, capped by apptainer.conf `sessiondir max size` (64 MiB as
    shipped) and held in memory. Inputs keep the spec's host paths.
    """
    binds = [(shlex.quote(_csv_escaped(mount.source)), mount.target, mount.read_only)
             for mount in spec.mounts]
    return _exec_words(spec, sif, project_dir, gpus, binds, scratch_dir, isolate_network)


def gives_gpus(spec: ContainerSpec) -> bool:
    """Whether the replay is handed GPUs (`--nv`)."""
    return spec.gpu_count > 0 or bool(spec.gpu_ids)


def definition_file(manifest: Manifest, spec: ContainerSpec, run_id: str,
                    image_tar: str) -> str:
    """An Apptainer definition file whose `apptainer run` replays `spec` (one seed).

    `image_tar` is the literal `From:` path of the docker-archive, relative to where
    `apptainer build` runs. The replay's /app must be bound from a copy, as %help says.
    """
    _check_run_id(run_id)
    sections = [
        ["Bootstrap: docker-archive", f"From: {_one_line('the image path', image_tar)}"],
        ["%labels", *_indented(_labels(spec, run_id))],
        ["%environment", *_indented(f"export {name}={shlex.quote(_one_line(name, value))}"
                                    for name, value in apptainer_env(spec).items())],
        ["%runscript", *_indented(_runscript(spec))],
        ["%help", *_indented(_help(manifest, spec, run_id))],
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def export_text(manifest: Manifest, spec: ContainerSpec, run_id: str,
                seeds: Sequence[int | None]) -> dict[str, str]:
    """The files of `reprobox export apptainer`: `run-apptainer.sh` and `reprobox-<run>.def`.

    The script replays once per seed (None: the captured one), each in `replay-seed-<seed>/`;
    the inputs are read from $INPUTS (`./inputs`, as `reprobox unpack` lays them out). The
    definition file (the first seed) is left out, and the script says why, where a value holds
    a line break, which only the script can pass on.
    """
    _check_run_id(run_id)
    seeded = _seeded_specs(manifest, spec, seeds)
    name = f"reprobox-{run_id}"
    try:
        files = {f"{name}.def": definition_file(manifest, seeded[0][1], run_id, IMAGE_TAR)}
        missing = None
    except UsageError as exc:
        files, missing = {}, str(exc)
    return {**files, SCRIPT: _script(manifest, run_id, seeded, f"{name}.sif", missing)}


def _exec_words(spec: ContainerSpec, sif: str, project_dir: str | None, gpus: bool,
                binds: Sequence[Bind], scratch_dir: str | None,
                isolate_network: bool) -> list[str]:
    if not spec.argv:
        raise UsageError("the replay has no command to run", hint="capture the run again")
    flags = ["apptainer", "exec", *EXEC_FLAGS]
    flags += ["--net", "--network", "none"] if isolate_network and not spec.network else []
    flags += ["--nv"] if gpus else []
    words = _quoted(flags)
    words += ["--workdir", scratch_dir] if scratch_dir is not None else []
    words += ["--pwd", shlex.quote(spec.workdir), *_project_mount(spec, project_dir)]
    for source, target, read_only in binds:
        words += ["--mount", _mount_word(source, target, read_only)]
    return [*words, sif, *_quoted(spec.argv)]


def _project_mount(spec: ContainerSpec, project_dir: str | None) -> list[str]:
    if spec.writable_dir is not None and project_dir is None:
        raise UsageError(f"the replay writes in {spec.writable_dir}: it needs a project folder "
                         "bound there", hint="pass project_dir (prepare_project_lines fills it)")
    if project_dir is not None and spec.writable_dir is None:
        raise UsageError("the replay has no writable folder to bind project_dir over",
                         hint="pass None as project_dir, as for the environment probe")
    if project_dir is None or spec.writable_dir is None:
        return []
    return ["--mount", _mount_word(project_dir, spec.writable_dir, False)]


def _mount_word(source: str, target: str, read_only: bool) -> str:
    """A `--mount` value as one shell word; `source` is shell text, made one quoted CSV field.

    --mount reads a CSV row (Apptainer >= 1.0), so paths may hold `,` and `:`, which --bind
    cannot take.
    """
    rest = _csv_row([f"dst={target}", *(["ro"] if read_only else [])])
    return shlex.quote('type=bind,"src=') + source + shlex.quote(f'",{rest}')


def _csv_row(fields: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def _csv_escaped(text: str) -> str:
    return text.replace('"', '""')  # inside a quoted CSV field


def _bind_points(paths: Sequence[str], project_dir: str) -> list[str]:
    lines = []
    for rel in paths:
        parent = posixpath.dirname(rel)
        made = f"mkdir -p -- {project_dir}/{shlex.quote(parent)} && " if parent else ""
        lines.append(f"{made}touch -- {project_dir}/{shlex.quote(rel)}")
    return [f"{line} &&" for line in lines[:-1]] + lines[-1:]


def _inside_project(spec: ContainerSpec) -> list[str]:
    """Bind targets under the writable folder, relative to it."""
    if spec.writable_dir is None:
        return []
    root = spec.writable_dir.rstrip("/") + "/"
    return [mount.target[len(root):] for mount in spec.mounts if mount.target.startswith(root)]


def _host_devices(spec: ContainerSpec) -> str:
    count = ",".join(str(index) for index in range(spec.gpu_count))
    devices = ",".join(spec.gpu_ids) or spec.env.get("CUDA_VISIBLE_DEVICES") or count
    if not _DEVICES.fullmatch(devices):
        raise UsageError(f"GPU list {devices!r} is not indexes or UUIDs",
                         hint="name the GPUs as CUDA_VISIBLE_DEVICES does: 0,1 or GPU-<uuid>")
    return devices


def _seeded_specs(manifest: Manifest, spec: ContainerSpec,
                  seeds: Sequence[int | None]) -> list[tuple[int, ContainerSpec]]:
    """(seed, spec started from it) per seed: the seed's variables changed, nothing else."""
    resolved = seeding.resolved_seeds(seeds, manifest.determinism.seed)
    return [(seed, replace(spec, env={**spec.env, **seeding.seed_env(seed)}))
            for seed in resolved]


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"run id {run_id!r} cannot name files",
                         hint="run ids are folder names under .reprobox/runs/")


def _one_line(what: str, text: str) -> str:
    # A definition file is line-based: a line starting with % would open a section.
    if "\n" in text or "\r" in text:
        raise UsageError(f"{what} holds a line break, which a definition file cannot carry",
                         hint=f"use {SCRIPT}, which passes it through the environment")
    return text


def _indented(lines: Iterable[str]) -> list[str]:
    return [f"    {line}" for line in lines]


def _labels(spec: ContainerSpec, run_id: str) -> list[str]:
    labels = [f"reprobox.run-id {run_id}", f"reprobox.tag {_one_line('the image', spec.image)}"]
    seed = spec.env.get("REPROBOX_SEED")
    return labels + ([f"reprobox.seed {_one_line('REPROBOX_SEED', seed)}"] if seed else [])


def _runscript(spec: ContainerSpec) -> list[str]:
    if not spec.argv:
        raise UsageError("the replay has no command to run", hint="capture the run again")
    command = _one_line("the command", shlex.join(spec.argv))
    return [f"cd {shlex.quote(_one_line('the working directory', spec.workdir))} || exit 1",
            f"exec {command}"]


def _help(manifest: Manifest, spec: ContainerSpec, run_id: str) -> list[str]:
    name = f"reprobox-{run_id}"
    copy = prepare_project_lines(f"{name}.sif", '"$PWD"/replay')
    run = ["apptainer", "run", *EXEC_FLAGS, *(["--nv"] if gives_gpus(spec) else [])]
    mount = _mount_word('"$PWD"/replay', spec.writable_dir or render.PROJECT_DIR, False)
    return [
        f"Replays run {run_id} of project {_one_line('the project', manifest.run.project)}, "
        "as reprobox captured it, with its seeds and flags.",
        f"Command: {_one_line('the command', shlex.join(spec.argv))}",
        f"Build it where {IMAGE_TAR} is (docker save {shlex.quote(spec.image)} -o {IMAGE_TAR}), "
        f"with Apptainer >= {MIN_APPTAINER}:",
        f"  apptainer build {name}.sif {name}.def",
        "Copy the image's /app to ./replay, where the run writes its outputs, then run it:",
        *(f"  {line}" for line in copy),
        f"  {_words(run)} --mount {mount} {name}.sif",
        "It shares this host's network (add --net --network none if the site allows it);",
        "memory and pids limits are the batch scheduler's; it runs as you, $HOME empty.",
    ]


def _script(manifest: Manifest, run_id: str, seeded: Sequence[tuple[int, ContainerSpec]],
            sif: str, no_definition: str | None) -> str:
    spec = seeded[0][1]
    header = _script_header(manifest, run_id, seeded)
    if no_definition:
        header += [f"# No definition file was written: {_comment(no_definition)}."]
    lines = [*header, "set -euo pipefail", "",
             f"IMAGE={shlex.quote(spec.image)}", f"IMAGE_TAR=${{IMAGE_TAR:-{IMAGE_TAR}}}",
             f"SIF=${{SIF:-{sif}}}"]
    lines += ['INPUTS=${INPUTS:-"$PWD/inputs"}'] if manifest.inputs else []
    lines += ["", *_script_image(), "status=0"]
    for seed, seeded_spec in seeded:
        lines += ["", *_script_seed(manifest, seed, seeded_spec)]
    return "\n".join([*lines, "", 'exit "$status"']) + "\n"


def _script_header(manifest: Manifest, run_id: str,
                   seeded: Sequence[tuple[int, ContainerSpec]]) -> list[str]:
    spec = seeded[0][1]
    seeds = ", ".join(str(seed) for seed, _ in seeded)
    memory = f" ({spec.memory} in reprobox replay)" if spec.memory else ""
    return [
        "#!/usr/bin/env bash",
        f"# reprobox: replay of run {run_id} with Apptainer, {len(seeded)} seed(s): {seeds}",
        f"#   command: {_comment(shlex.join(manifest.run.argv))}",
        f"#   image:   {_comment(spec.image)}",
        "#",
        f"# Needs bash and Apptainer >= {MIN_APPTAINER}, no root. Run it from the folder",
        f"# holding {IMAGE_TAR} (or set IMAGE_TAR), the image as `docker save` writes it; it is",
        "# made here when Docker has the image. From an archive, `reprobox unpack exp.rbx DIR`",
        "# leaves DIR/images/images.tar; where that also holds the base image, Apptainer may not",
        "# know which to take: `docker load` it and `docker save` the image alone. The SIF is",
        "# built once, beside it.",
        "# Each seed replays in replay-seed-<seed>/, a copy of the image's /app where the run",
        "# writes its outputs (and .reprobox-state/); replay-seed-<seed>.exit_code holds its exit",
        "# code and replay-seed-<seed>.tmp/ its /tmp and $HOME.",
        *(["# Declared inputs are bound read-only from $INPUTS (./inputs, as in an archive)."]
          if manifest.inputs else []),
        "#",
        "# Unlike `reprobox replay` (Docker), this replay shares the host's network: add",
        "# `--net --network none` after `apptainer exec` where the site allows network",
        f"# namespaces. It sets no memory{memory} or pids ({spec.pids_limit}) limit: ask the",
        "# batch scheduler (sbatch --mem); Apptainer's cgroup flags need cgroups v2 with",
        "# systemd, or root.",
        "# It runs as you, not uid 1000, with an empty $HOME (Apptainer keeps HOME its own).",
    ]


def _script_image() -> list[str]:
    return [
        'if [ ! -s "$IMAGE_TAR" ]; then',
        '  docker save "$IMAGE" -o "$IMAGE_TAR"',
        "fi",
        *_or_exit(build_sif_lines('"$IMAGE_TAR"', '"$SIF"')),
    ]


def _script_seed(manifest: Manifest, seed: int, spec: ContainerSpec) -> list[str]:
    folder = f"replay-seed-{seed}"
    project, scratch = f'"$PWD"/{folder}', f'"$PWD"/{folder}.tmp'
    captured = " (as captured)" if seed == manifest.determinism.seed else ""
    words = _exec_words(spec, '"$SIF"', project, gives_gpus(spec), _input_binds(manifest, spec),
                        scratch, False)
    timeout = f"timeout --kill-after=30 {spec.timeout_s:g}s " if spec.timeout_s else ""
    return [
        f"# seed {seed}{captured}",
        *_or_exit(prepare_project_lines('"$SIF"', project)),
        *_or_exit(_bind_points([record.path for record in manifest.inputs], project)),
        *_or_exit([f"rm -rf -- {scratch} && mkdir -p -- {scratch}"]),
        *env_export_lines(spec),
        "code=0",
        f"{timeout}{' '.join(words)} || code=$?",
        f'echo "$code" > {folder}.exit_code',
        '[ "$code" -eq 0 ] || status=1',
    ]


def _input_binds(manifest: Manifest, spec: ContainerSpec) -> list[Bind]:
    """The declared inputs, read-only from $INPUTS at their paths in the project."""
    root = spec.writable_dir or render.PROJECT_DIR
    return [('"$INPUTS"' + shlex.quote("/" + _csv_escaped(record.path)),
             posixpath.join(root, record.path), True) for record in manifest.inputs]


def _or_exit(lines: Sequence[str]) -> list[str]:
    return [*lines[:-1], f"{lines[-1]} || exit 1"] if lines else []


def _comment(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def _quoted(words: Sequence[str]) -> list[str]:
    return [shlex.quote(word) for word in words]


def _words(words: Sequence[str]) -> str:
    return " ".join(_quoted(words))
