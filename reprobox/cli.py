"""The `reprobox` command: thin verbs over the library, one place that maps errors to exit codes.

Each verb imports the modules it needs when it runs: `reprobox capture` must not pay for
numpy, docker and jinja2 on every start (it aims to be faster than `pip freeze`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.markup import escape

from reprobox import __version__, bundle
from reprobox.errors import ReproboxError

if TYPE_CHECKING:
    from reprobox.build import BuiltImage
    from reprobox.manifest import Gpus

EXIT_NOT_REPRODUCED = 3
# Build-log lines shown only with --verbose (the spinner still shows them as they pass).
_BUILD_CHATTER = (" ", "Processing ", "Looking in links", "Removing intermediate", "Installing")
Handler = Callable[[argparse.Namespace, Console], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `reprobox` command; returns the exit code."""
    args = _parser().parse_args(argv)
    err = Console(stderr=True, highlight=False)
    try:
        return int(args.handler(args, err))
    except ReproboxError as exc:
        _print_error(err, exc, args.debug)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]: nothing half-written was left behind")
        return 130


def _print_error(err: Console, exc: ReproboxError, debug: bool) -> None:
    if debug:
        err.print_exception()
    log_tail = getattr(exc, "log_tail", "")
    if log_tail:
        err.print("last lines of the build log:", style="dim")
        err.print(log_tail, markup=False, highlight=False)
    # Messages name user files and values: escape them so `[...]` is never read as markup.
    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    if exc.hint:
        err.print(f"[dim]hint:[/] {escape(exc.hint)}", soft_wrap=True)


# --- handlers ---------------------------------------------------------------------------------


def _capture(args: argparse.Namespace, err: Console) -> int:
    from reprobox.capture import CaptureOptions, capture

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    options = CaptureOptions(
        argv=tuple(command),
        seed=args.seed,
        threads=args.threads,
        deterministic=not args.no_deterministic,
        warn_only=args.warn_only,
        inputs=tuple(args.input),
        outputs=tuple(args.output),
        env_names=tuple(args.env),
        rtol=args.rtol,
        atol=args.atol,
    )
    captured = capture(options)
    manifest = captured.manifest()
    err.print(
        f"captured {captured.run_id}: {len(manifest.outputs)} outputs, "
        f"{len(manifest.python.packages)} packages, seed {manifest.determinism.seed} "
        f"-> {captured.path}",
        soft_wrap=True,
    )
    if not manifest.succeeded:
        err.print(
            f"[bold red]error:[/] the command exited with {manifest.run.exit_code}; "
            "the run is recorded as failed"
        )
        return 1
    return 0


def _base(args: argparse.Namespace, err: Console) -> int:
    from reprobox import baseimage
    from reprobox.engine import DockerEngine

    with err.status("making a base image with debootstrap") as status:
        made = baseimage.make(
            DockerEngine(),
            args.python,
            args.suite,
            args.mirror,
            lambda line: status.update(line[:90]),
            force=args.force,
        )
    err.print(f"base image {made.ref} (Python {made.python_version}) is ready")
    return 0


def _build(args: argparse.Namespace, err: Console) -> int:
    built = _do_build(args, err)
    print(built.tag)
    return 0


def _do_build(args: argparse.Namespace, err: Console) -> BuiltImage:
    from reprobox.build import build
    from reprobox.engine import DockerEngine

    target = bundle.find(args.bundle)
    with err.status("building") as status:

        def log(line: str) -> None:
            if line.strip():
                status.update(line.strip()[:90])
                if args.verbose or not line.startswith(_BUILD_CHATTER):
                    err.print(line.rstrip(), style="dim", markup=False, soft_wrap=True)

        return build(target, DockerEngine(), log, base_image=args.base_image)


def _replay(args: argparse.Namespace, err: Console) -> int:
    from reprobox.engine import DockerEngine
    from reprobox.replay import DEFAULT_TIMEOUT_S, read_result, replay

    target = bundle.find(args.bundle)
    timeout = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    # With --json, stdout carries only the JSON: the run's own output goes to stderr.
    shown = sys.stderr if getattr(args, "json", False) else sys.stdout
    folder = replay(target, DockerEngine(), _writer(shown), timeout, args.memory,
                    host_gpus=_host_gpus(args.cpu), cpu=args.cpu)
    result = read_result(folder)
    for note in result.notes:
        err.print(f"[yellow]warning:[/] {escape(note)}", soft_wrap=True)
    timed_out = " (timed out)" if result.timed_out else ""
    err.print(
        f"replay {result.replay_id}: exit code {result.exit_code}{timed_out} -> {folder}",
        soft_wrap=True,
    )
    return 0 if result.exit_code == 0 and not result.timed_out else 1


def _preflight(args: argparse.Namespace) -> None:
    """Refuse a GPU run this host cannot replay before a build that may take many minutes."""
    from reprobox.engine import DockerEngine
    from reprobox.replay import plan_ahead

    manifest = bundle.find(args.bundle).manifest()
    plan_ahead(manifest, DockerEngine(), _host_gpus(args.cpu), args.cpu)


def _host_gpus(cpu: bool) -> Gpus:
    """This host's GPUs, which the preflight weighs against the original's (none with --cpu)."""
    from reprobox.capture import gpu
    from reprobox.capture.runner import subprocess_runner
    from reprobox.manifest import Gpus

    return Gpus(source="none") if cpu else gpu.probe(subprocess_runner, os.environ)[0]


def _compare(args: argparse.Namespace, err: Console) -> int:
    from reprobox import report
    from reprobox.replay import compare_replay

    target = bundle.find(args.bundle)
    replay_dir = Path(args.replay) if args.replay else None
    _, comparison = compare_replay(target, replay_dir)
    if args.json:
        print(report.comparison_json(comparison))
    else:
        Console().print(report.comparison_table(comparison))
    return 0 if comparison.reproduced else EXIT_NOT_REPRODUCED


def _run(args: argparse.Namespace, err: Console) -> int:
    _preflight(args)
    _do_build(args, err)
    _replay(args, err)
    args.replay = None
    return _compare(args, err)


def _show(args: argparse.Namespace, err: Console) -> int:
    from reprobox import report

    manifest = bundle.find(args.bundle).manifest()
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
    else:
        Console().print(report.manifest_summary(manifest))
    return 0


def _doctor(args: argparse.Namespace, err: Console) -> int:
    from reprobox import doctor, report
    from reprobox.errors import UsageError

    if args.bundle is not None and args.python is not None:
        raise UsageError("--python checks an environment, not a bundle",
                         hint="reprobox doctor --python PATH, or reprobox doctor BUNDLE")
    with err.status("looking for determinism hazards"):
        if args.bundle is not None:
            diagnosis = doctor.check_bundle(bundle.find(args.bundle))
        else:
            diagnosis = doctor.check_environment(Path.cwd(), args.python)
    if args.json:
        print(report.findings_json(diagnosis.findings))
    else:
        Console().print(report.findings_table(diagnosis.findings, diagnosis.subject))
    return EXIT_NOT_REPRODUCED if diagnosis.hazardous else 0


def _writer(stream: TextIO) -> Callable[[bytes], None]:
    def write(chunk: bytes) -> None:
        stream.buffer.write(chunk)
        stream.buffer.flush()

    return write


# --- parser -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprobox",
        description="Capture, rebuild, replay and compare ML runs.",
        epilog="exit codes: 0 done/reproduced, 1 error, 2 usage, 3 not reproduced, "
        "4 this host cannot replay it as captured (no GPU, old driver)",
    )
    parser.add_argument("--version", action="version", version=f"reprobox {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(debug=False)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    _add_capture(verbs)
    _add_base(verbs)
    for name, handler, helptext in (
        ("build", _build, "build (or reuse) the pinned image of a bundle"),
        ("replay", _replay, "replay the run in its image"),
        ("compare", _compare, "compare the newest replay with the original"),
        ("run", _run, "build + replay + compare"),
        ("show", _show, "show what a bundle recorded"),
    ):
        _add_bundle_verb(verbs, name, handler, helptext)
    _add_doctor(verbs)
    return parser


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )


def _add_capture(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = verbs.add_parser(
        "capture",
        help="run a command and record it and its environment",
        usage="reprobox capture [options] -- CMD [ARGS...]",
    )
    sub.add_argument("--seed", type=int, help="seed to inject (default: a fresh random one)")
    sub.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    sub.add_argument(
        "--no-deterministic",
        action="store_true",
        help="do not force torch deterministic algorithms",
    )
    sub.add_argument(
        "--warn-only",
        action="store_true",
        help="ops with no deterministic kernel warn (and are recorded) instead of failing",
    )
    sub.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="PATH",
        help="a file the run reads (hashed, mounted read-only on replay)",
    )
    sub.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="PATH",
        help="a file or folder the run writes (default: every file it creates or changes)",
    )
    sub.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="also record this environment variable (redacted if secret)",
    )
    sub.add_argument("--rtol", type=float, default=1e-7, help="relative tolerance for outputs")
    sub.add_argument("--atol", type=float, default=0.0, help="absolute tolerance for outputs")
    sub.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    _common(sub)
    sub.set_defaults(handler=_capture)


def _add_base(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = verbs.add_parser("base", help="make a Debian-based Python image locally (no registry)")
    sub.add_argument("--python", help="Python X.Y (default: this interpreter's)")
    sub.add_argument("--suite", help="Debian suite (default: the one that ships that Python)")
    sub.add_argument("--mirror", help="Debian mirror URL (default: from the apt sources)")
    sub.add_argument("--force", action="store_true", help="make it again even if it exists")
    _common(sub)
    sub.set_defaults(handler=_base)


def _add_bundle_verb(
    verbs: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    handler: Handler,
    helptext: str,
) -> None:
    sub = verbs.add_parser(name, help=helptext)
    sub.add_argument("bundle", nargs="?", help="bundle folder or run id (default: the newest)")
    if name in ("build", "run"):
        sub.add_argument("--base-image", help="build on this local image")
        sub.add_argument("-v", "--verbose", action="store_true", help="show the whole build log")
    if name in ("replay", "run"):
        sub.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="stop the replay after this many seconds (default: 6 hours)",
        )
        sub.add_argument("--memory", help="memory limit for the replay, e.g. 8g (default: none)")
        sub.add_argument("--cpu", action="store_true",
                         help="replay a GPU run on the CPU; outputs are judged by tolerance")
    if name in ("compare", "run", "show"):
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    if name == "compare":
        sub.add_argument("--replay", help="the replay folder to compare (default: the newest)")
    _common(sub)
    sub.set_defaults(handler=handler)


def _add_doctor(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = verbs.add_parser(
        "doctor",
        help="list the determinism hazards of this project or of a bundle, with fixes",
        epilog="exit codes: 0 no hazards, 1 error, 3 hazards found (warnings or errors)",
    )
    sub.add_argument(
        "bundle", nargs="?", help="bundle folder or run id (default: this project and Python)"
    )
    sub.add_argument(
        "--python", metavar="PATH", help="the interpreter to check (default: python3 on PATH)"
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    _common(sub)
    sub.set_defaults(handler=_doctor)
