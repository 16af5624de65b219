"""Manifest → REPRODUCE.md: what was run, on what, with which seeds, and how to replay it.

The text is for people who open an archive years later, perhaps without reprobox: it gives the
`docker load` / `docker run` commands with the same hardening, environment and GPU access a
replay uses. Pure and deterministic: the same manifest gives the same bytes. Every command is
shell-quoted, so it can be pasted as it is.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping, Sequence

import jinja2

from reprobox import preflight, render, seeding
from reprobox.manifest import Manifest, Output

IMAGE_TAR = "images/images.tar"
REPLAY_DIR = "replay"  # where the plain `docker run` puts the outputs, under the current folder
CONTAINER_NAME = "reprobox-replay"
CONTAINER_PATH = f"{render.ENV_DIR}/bin:/usr/local/bin:/usr/bin:/bin"
_HOST_DIR = '"$PWD"'  # left to the shell, so the command works wherever it is pasted

# The hardening of engine._create_kwargs, as `docker run` flags.
HARDENING = (
    "--network", "none", "--read-only", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges", "--user", f"{render.UID}:{render.UID}",
    "--tmpfs", "/tmp:rw,nosuid,nodev", "--pids-limit", "1024", "--init",
)

_VALUED_OPTIONS = frozenset({"--name", "--network", "--cap-drop", "--security-opt", "--user",
                             "--tmpfs", "--pids-limit", "--gpus", "--workdir", "-e", "-v"})

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reprobox", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def reproduce_md(manifest: Manifest, image_tag: str, base_image: str | None,
                 archive_name: str) -> str:
    """The REPRODUCE.md of an archive named `archive_name` holding `image_tag`."""
    return _TEMPLATES.get_template("REPRODUCE.md.j2").render(
        m=manifest,
        command=shlex.join(manifest.run.argv),
        container_command=shlex.join(_container_argv(manifest)),
        image_tag=image_tag,
        base_image=base_image,
        image_tar=IMAGE_TAR,
        platform=_platform(manifest),
        blas=[_blas(b.name, b.version, b.threading, b.num_threads) for b in manifest.system.blas],
        gpu=_gpu_lines(manifest),
        injected=sorted(seeding.replay_env(manifest.determinism).items()),
        outputs=[_output_row(o) for o in manifest.outputs],
        inputs=[(_cell(i.path), i.size, i.sha256) for i in manifest.inputs],
        archive=shlex.quote(archive_name),
        reprobox_steps=reprobox_steps(shlex.quote(archive_name)),
        docker_steps=docker_steps(manifest, image_tag),
        cell=_cell,
    )


def reprobox_steps(archive: str) -> list[str]:
    """The reprobox commands that check, unpack and replay `archive` (already shell-quoted)."""
    steps = [
        (f"reprobox verify {archive}", "checksums, format version, signature (--key KEY.pub)"),
        (f"reprobox unpack {archive} DIR", "verifies again, extracts, loads the images"),
        ("reprobox replay DIR/bundle", "no registry and no network needed"),
        ("reprobox compare DIR/bundle", "exit 0: reproduced, 3: not reproduced"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    return [f"{command.ljust(width)}# {why}" for command, why in steps]


def docker_steps(manifest: Manifest, image_tag: str) -> list[str]:
    """Shell lines that replay the run with Docker alone, from the unpacked archive's folder."""
    # Outputs are copied out of the stopped container, as reprobox fetches them: a folder
    # mounted over /app/<folder> would hide the code the image keeps there.
    outputs = [o.path for o in manifest.outputs]
    steps = [f"docker load -i {IMAGE_TAR}"]
    steps.append(_continued(_paired(docker_run_argv(manifest, image_tag, keep=bool(outputs)))))
    for path in outputs:
        target = f"{REPLAY_DIR}/{path}"
        source = f"{CONTAINER_NAME}:{render.PROJECT_DIR}/{path}"
        steps.append(f"mkdir -p {shlex.quote(posixpath.dirname(target))} && docker cp "
                     f"{shlex.quote(source)} {shlex.quote(target)}")
    if outputs:
        steps.append(f"docker rm -v {CONTAINER_NAME}")
    return steps


def docker_run_argv(manifest: Manifest, image_tag: str, keep: bool = False) -> list[str]:
    """`docker run` with a replay's hardening, env, mounts and GPUs; words already shell-quoted.

    `keep` names the container and keeps it, for `docker cp` of outputs outside any folder.
    """
    words = ["docker", "run", *(["--name", CONTAINER_NAME] if keep else ["--rm"]), *HARDENING]
    if preflight.used_gpu(manifest):
        words += ["--gpus", "all"]
    words += ["--workdir", render.container_workdir(manifest)]
    quoted = [shlex.quote(word) for word in words]
    for name, value in sorted(replay_process_env(manifest).items()):
        quoted += ["-e", shlex.quote(f"{name}={value}")]
    quoted += ["-v", render.PROJECT_DIR]  # writable, filled from the image, as a replay has it
    quoted += _mounts(manifest)
    quoted += [shlex.quote(image_tag), *map(shlex.quote, _container_argv(manifest))]
    return quoted


def replay_process_env(manifest: Manifest) -> dict[str, str]:
    """The environment a replay gives the command (replay.container_spec's, no state folder)."""
    env = seeding.process_env(manifest.determinism, render.SHIM_DIR, None, manifest.run.env)
    env["HOME"] = "/tmp"
    env["PATH"] = CONTAINER_PATH
    return env


def _mounts(manifest: Manifest) -> list[str]:
    words = []
    for record in manifest.inputs:
        # unpacked, an archive keeps the declared inputs in inputs/ (reprobox.archive)
        target = f"/inputs/{record.path}:{render.PROJECT_DIR}/{record.path}:ro"
        words += ["-v", _HOST_DIR + shlex.quote(target)]
    return words


def _container_argv(manifest: Manifest) -> tuple[str, ...]:
    return render.container_argv(manifest.run.argv, manifest.python.executable)


def _paired(words: Sequence[str]) -> list[str]:
    """Each option joined to its value, so that a line break never falls between them."""
    groups: list[str] = []
    for word in words:
        if groups and groups[-1] in _VALUED_OPTIONS:
            groups[-1] = f"{groups[-1]} {word}"
        else:
            groups.append(word)
    return groups


def _continued(words: Sequence[str], width: int = 96) -> str:
    """Words on continued lines no wider than `width` where a word allows."""
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width - 2:
            lines.append(line)
            line = "  " + word
        else:
            line = f"{line} {word}" if line else word
    return " \\\n".join([*lines, line])


def _platform(manifest: Manifest) -> list[tuple[str, str]]:
    python, system = manifest.python, manifest.system
    rows = [
        ("Python", f"{python.implementation} {python.version} ({python.abi_tag}, "
                   f"{python.platform_tag}), {len(python.packages)} packages"),
        ("OS", f"{system.os_name}, kernel {system.kernel}, {system.libc}"),
        ("CPU", f"{system.cpu_model}, {system.cpu_count} cores, {system.arch}"),
    ]
    git = manifest.git
    if git is not None:
        state = "dirty: uncommitted changes in git.diff" if git.dirty else "clean"
        rows.append(("git", f"{git.commit} on {git.branch or 'a detached HEAD'} ({state})"))
    else:
        rows.append(("git", "not a git repository"))
    return rows


def _blas(name: str, version: str | None, threading: str | None, threads: int | None) -> str:
    count = f"threads: {threads}" if threads else None
    details = [d for d in (threading, count) if d]
    return f"{name} {version or ''}".strip() + (f" ({', '.join(details)})" if details else "")


def _gpu_lines(manifest: Manifest) -> list[str]:
    lines = [f"GPU: {manifest.gpu.describe()}"] if manifest.gpu is not None else []
    stack = manifest.cuda
    if stack is not None and stack.torch_version:
        build = f"CUDA {stack.torch_cuda}" if stack.torch_cuda else "a CPU build"
        lines.append(f"torch {stack.torch_version} ({build})")
    if stack is not None:  # torch has its line above
        lines += [f"{name} built for CUDA {version}"
                  for name, version in sorted(stack.frameworks.items()) if name != "torch"]
    lines.append("The run used a GPU: the replay needs one (`--gpus all`)."
                 if preflight.used_gpu(manifest) else "The run did not use a GPU.")
    return lines


def _output_row(output: Output) -> Mapping[str, object]:
    tolerance = f"rtol {output.rtol:g}, atol {output.atol:g}" + (
        f", {output.ulps} ulps" if output.ulps is not None else "")
    return {"path": _cell(output.path), "size": output.size, "sha256": output.sha256,
            "stored": "yes" if output.stored else "no (over the size cap)",
            "tolerance": tolerance}


def _cell(text: object) -> str:
    """A value as a Markdown table cell: in a code span, its pipes escaped."""
    value = str(text).replace("|", "\\|").replace("\n", " ")
    fence = "``" if "`" in value else "`"
    return f"{fence} {value} {fence}" if fence == "``" else f"`{value}`"
