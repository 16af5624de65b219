"""The `reprobox` command: thin verbs over the library, one place that maps errors to exit codes.

Each verb imports the modules it needs when it runs: `reprobox capture` must not pay for
numpy, docker and jinja2 on every start (it aims to be faster than `pip freeze`).
"""

from __future__ import annotations

import argparse
import json
import math
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
    from reprobox.cluster.slurm_script import SlurmOptions
    from reprobox.compare import Comparison
    from reprobox.compare.tolerances import Tolerance
    from reprobox.manifest import Gpus
    from reprobox.replay import ReplayResult, RunRecord
    from reprobox.variation import Variation

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
        ulps=args.ulps,
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
    """Exit 0 when every replay exited 0 in time (with --repeat, all N), else 1."""
    _check_replay_options(args)
    target, folders, succeeded, lost = _do_replay(args, err)
    if args.seeds:
        return _sweep(args, target, folders, lost)
    if len(folders) > 1:
        from reprobox import report

        Console().print(report.variation_table(_measure(args, target, folders)))
    return 0 if succeeded else 1


def _sweep(args: argparse.Namespace, target: bundle.Bundle, folders: list[Path],
           lost: dict[int, str]) -> int:
    """The seeds' table (or JSON); exit 0 when every seed's replay ended as the original did
    (and the original's own seed, if replayed, reproduced it), else 3."""
    from reprobox import report
    from reprobox.variation import measure_sweep

    sweep = measure_sweep(target, folders, _tolerances(args, target.path), lost)
    if getattr(args, "json", False):
        print(json.dumps({"sweep": sweep.to_dict(),
                          "replays": [folder.name for folder in folders]}, indent=2,
                         sort_keys=True))
    else:
        Console().print(report.sweep_table(sweep))
    own_differs = sweep.own_seed is not None and sweep.own_seed[1] == "different"
    return EXIT_NOT_REPRODUCED if sweep.failed or own_differs else 0


def _check_replay_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go together before anything is built or submitted."""
    from reprobox.errors import UsageError

    if args.repeat > 1 and args.seeds:
        raise UsageError("--repeat and --seeds together: choose one",
                         hint="--seeds replays once per seed; --repeat N replays one seed N times")
    if args.repeat > 1 and args.on == "slurm":
        raise UsageError("--repeat with --on slurm", hint="use --seeds for a sweep on Slurm")
    if args.on == "local":
        _refuse_slurm_options(args)


def _do_replay(args: argparse.Namespace, err: Console
               ) -> tuple[bundle.Bundle, list[Path], bool, dict[int, str]]:
    """Replay (--repeat times, or once per seed); the bundle, the replay folders, whether all
    exited 0 in time, and the seeds whose Slurm task left no result, with why."""
    from reprobox.engine import DockerEngine
    from reprobox.replay import DEFAULT_TIMEOUT_S, read_result, replay_many

    target = bundle.find(args.bundle)
    timeout = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    # With --json, stdout carries only the JSON: the run's own output goes to stderr.
    shown = sys.stderr if getattr(args, "json", False) else sys.stdout
    lost: dict[int, str] = {}
    if args.on == "slurm":
        folders, lost = _replay_on_slurm(args, target, timeout, _writer(shown), err)
    else:
        folders = replay_many(target, DockerEngine(), _writer(shown), args.repeat, timeout,
                              args.memory, host_gpus=_host_gpus(args.cpu), cpu=args.cpu,
                              seeds=args.seeds)
    results = [read_result(folder) for folder in folders]
    _tell_replays(err, folders, results, lost, bool(args.seeds))
    succeeded = not lost and all(r.exit_code == 0 and not r.timed_out for r in results)
    return target, folders, succeeded, lost


def _tell_replays(err: Console, folders: list[Path], results: list[ReplayResult],
                  lost: dict[int, str], seeds: bool) -> None:
    """The preflight's warnings once, then one line per replay, then the tasks that left none."""
    for note in results[0].notes:
        err.print(f"[yellow]warning:[/] {escape(note)}", soft_wrap=True)
    for folder, result in zip(folders, results, strict=True):
        timed_out = " (timed out)" if result.timed_out else ""
        details = [f"seed {result.seed}"] if seeds else []
        details += [result.where] if result.where else []
        how = f" ({', '.join(details)})" if details else ""
        err.print(f"replay {result.replay_id}{how}: exit code {result.exit_code}{timed_out} "
                  f"-> {folder}", soft_wrap=True, markup=False)
    for why in lost.values():
        err.print(f"[yellow]warning:[/] {escape(why)}", soft_wrap=True)


def _replay_on_slurm(args: argparse.Namespace, target: bundle.Bundle, timeout: float,
                     on_output: Callable[[bytes], None],
                     err: Console) -> tuple[list[Path], dict[int, str]]:
    from reprobox.cluster.slurm import Slurm
    from reprobox.cluster.slurm_replay import SlurmRequest, replay_on_slurm
    from reprobox.engine import DockerEngine

    request = SlurmRequest(_slurm_options(args), args.seeds, timeout, args.memory, args.cpu)
    with err.status("submitting to Slurm") as status:

        def event(line: str) -> None:
            status.update(escape(line))
            err.print(f"[dim]{escape(line)}[/]", soft_wrap=True)

        done = replay_on_slurm(target, DockerEngine(), Slurm(), request, event, on_output)
    return done.folders, done.lost


def _slurm_options(args: argparse.Namespace) -> SlurmOptions:
    from reprobox.cluster.slurm_script import SlurmOptions

    return SlurmOptions(args.partition, args.gpus, args.time, cpus=_threads(args),
                        engine=args.container_engine)


def _threads(args: argparse.Namespace) -> int:
    return bundle.find(args.bundle).manifest().determinism.threads


def _refuse_slurm_options(args: argparse.Namespace) -> None:
    from reprobox.errors import UsageError

    given = [name for name, value in (("--partition", args.partition), ("--gpus", args.gpus),
                                      ("--time", args.time)) if value]
    if args.container_engine != "auto":
        given.append("--container-engine")
    if given:
        raise UsageError(f"{given[0]} is for Slurm replays",
                         hint=f"add --on slurm, or drop {given[0]}")


def _measure(args: argparse.Namespace, target: bundle.Bundle,
             folders: list[Path]) -> Variation:
    from reprobox import variation

    return variation.measure(target, folders, _tolerances(args, target.path))


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


def _compare(args: argparse.Namespace, err: Console, measured: Variation | None = None) -> int:
    """Exit 0 when reproduced (with `run --repeat`, every replay), else 3."""
    from reprobox import report

    comparison, title, sides = _compared(args)
    if args.json:
        text = report.comparison_json(comparison)
        if measured is not None:  # one JSON document: the newest replay's, and the spread
            text = json.dumps({**json.loads(text), "variation": measured.to_dict()}, indent=2,
                              sort_keys=True)
        print(text)
    else:
        Console().print(report.comparison_table(comparison))
        if measured is not None:
            Console().print(report.variation_table(measured))
    if args.html:
        from reprobox.html_report import write_html

        write_html(Path(args.html), comparison, title, sides)
        err.print(f"HTML report -> {escape(args.html)}", soft_wrap=True)
    every = measured is None or measured.reproduced == len(measured.replays)
    return 0 if comparison.reproduced and every else EXIT_NOT_REPRODUCED


def _compared(args: argparse.Namespace) -> tuple[Comparison, str, tuple[str, str]]:
    """What `compare` shows, its title and the two sides' names: a replay against its original,
    or run B against A."""
    from reprobox.errors import UsageError
    from reprobox.replay import compare_runs, open_run

    other = getattr(args, "other", None)
    if other is None and not _names_a_replay(args.bundle):
        replay_dir = Path(args.replay) if args.replay else None
        return _compared_with_original(args, bundle.find(args.bundle), replay_dir)
    if args.replay:
        raise UsageError("--replay picks a replay of BUNDLE; it has no use with a replay folder "
                         "or two runs", hint="reprobox compare A B, or compare BUNDLE --replay DIR")
    reference = open_run(args.bundle)
    if other is None:  # a replay folder alone: against its original
        return _compared_with_original(args, reference.bundle, reference.replay_dir)
    second = open_run(other)
    comparison = compare_runs(reference, second, _tolerances(args, reference.bundle.path))
    sides = (f"A ({reference.name})", f"B ({second.name})")
    return comparison, f"{_run_title(reference)} vs {_run_title(second)}", sides


def _compared_with_original(args: argparse.Namespace, target: bundle.Bundle,
                            replay_dir: Path | None) -> tuple[Comparison, str, tuple[str, str]]:
    from reprobox.replay import compare_replay

    folder, comparison = compare_replay(target, replay_dir, _tolerances(args, target.path))
    return comparison, f"run {target.path.name}, replay {folder.name}", ("original", "replay")


def _names_a_replay(arg: str | None) -> bool:
    return arg is not None and (Path(arg) / "replay.json").is_file()


def _run_title(run: RunRecord) -> str:
    return f"run {run.bundle.run_id}" + (f", replay {run.replay_dir.name}" if run.replay_dir
                                         else " (original)")


def _tolerances(args: argparse.Namespace, bundle_dir: Path) -> tuple[Tolerance, ...]:
    """The bundle's settings.yaml rules, then --tolerance's: the last one that matches wins."""
    from reprobox.compare.tolerances import bundle_tolerances

    return (*bundle_tolerances(bundle_dir), *getattr(args, "tolerance", ()))


def _tolerance_option(text: str) -> Tolerance:
    """Parse --tolerance as argparse reads it, so a bad one stops `run` before it builds."""
    from reprobox.compare.tolerances import parse_option
    from reprobox.errors import UsageError

    try:
        return parse_option(text)
    except UsageError as exc:
        message = str(exc).removeprefix("--tolerance ")
        raise argparse.ArgumentTypeError(f"{message} (hint: {exc.hint})") from None


def _run(args: argparse.Namespace, err: Console) -> int:
    """Shows the newest replay's comparison; with --repeat N, exit 0 only if all N reproduced."""
    _check_replay_options(args)
    if args.on == "local":
        _preflight(args)
    _do_build(args, err)
    target, folders, _, lost = _do_replay(args, err)
    if args.seeds:
        return _sweep(args, target, folders, lost)
    args.replay = None
    measured = _measure(args, target, folders) if len(folders) > 1 else None
    return _compare(args, err, measured)


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


def _pack(args: argparse.Namespace, err: Console) -> int:
    from reprobox import archive
    from reprobox.engine import DockerEngine

    target = bundle.find(args.bundle)
    out = Path(args.output)
    with err.status("packing") as status:
        archive.pack(target, out, DockerEngine(),
                     lambda what, done: status.update(f"{what[:70]} ({done / 1e6:,.0f} MB)"),
                     sign_key=Path(args.sign) if args.sign else None)
    err.print(f"packed {target.path.name} into {out} ({out.stat().st_size / 1e6:,.1f} MB)")
    return 0


def _export(args: argparse.Namespace, err: Console) -> int:
    """Write what a cluster engine reads; one file to stdout or -o, Apptainer's to a folder."""
    from reprobox.cluster.exports import ExportRequest, export
    from reprobox.cluster.kubernetes import KubernetesOptions

    target = bundle.find(args.bundle)
    request = ExportRequest(
        args.target, args.seeds, _slurm_options(args),
        KubernetesOptions(claim=args.claim, inputs_claim=args.inputs_claim,
                          namespace=args.namespace),
        args.image or _pushed_digest(args, target), args.timeout or _default_timeout(),
        args.memory, args.cpu)
    files = export(target, request)
    if args.target != "apptainer" and args.output is None:
        (text,) = files.values()
        sys.stdout.write(text)
        return 0
    where = _write_export(files, args, target)
    names = f"{', '.join(sorted(files))} in " if args.target == "apptainer" else ""
    err.print(f"wrote {names}{escape(str(where))}", soft_wrap=True)
    return 0


def _pushed_digest(args: argparse.Namespace, target: bundle.Bundle) -> str | None:
    """Kubernetes pulls by digest: the image's, if it was pushed from this host."""
    if args.target != "kubernetes":
        return None
    from reprobox.build import read_built
    from reprobox.engine import DockerEngine
    from reprobox.errors import EngineError

    try:
        return DockerEngine().repo_digest(read_built(target).tag)
    except EngineError:
        return None


def _default_timeout() -> float:
    from reprobox.replay import DEFAULT_TIMEOUT_S

    return DEFAULT_TIMEOUT_S


def _write_export(files: dict[str, str], args: argparse.Namespace,
                  target: bundle.Bundle) -> Path:
    from reprobox.errors import UsageError
    from reprobox.fileio import atomic_write, staged_dir

    if args.target != "apptainer":
        out = Path(args.output)
        atomic_write(out, next(iter(files.values())))
        return out
    folder = Path(args.output or f"{target.run_id}-apptainer")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} exists and is not an empty folder",
                         hint="name a new folder with -o")
    if folder.is_dir():
        folder.rmdir()
    with staged_dir(folder) as staging:
        for name, text in files.items():
            atomic_write(staging / name, text)
            if name.endswith(".sh"):
                (staging / name).chmod(0o755)
    return folder


def _verify(args: argparse.Namespace, err: Console) -> int:
    from reprobox import archive

    with err.status(f"verifying {args.archive}"):
        verified = archive.verify(Path(args.archive), Path(args.key) if args.key else None)
    signature = ("signature checked" if verified.signature_checked
                 else "signed (pass --key to check the signature)" if verified.signed
                 else "not signed")
    print(f"{verified.path}: OK, format {verified.format_version}, {verified.members} files "
          f"checked, {signature}")
    return 0


def _unpack(args: argparse.Namespace, err: Console) -> int:
    from reprobox import archive
    from reprobox.engine import DockerEngine

    source = Path(args.archive)
    dest = Path(args.dir) if args.dir else Path(source.name.partition(".")[0] or "unpacked")
    with err.status(f"unpacking {source}") as status:
        verified, loaded = archive.unpack(
            source, dest, DockerEngine(), Path(args.key) if args.key else None,
            lambda what, done: status.update(f"{what[:70]} ({done / 1e6:,.0f} MB)"),
            load=not args.no_load)
    if verified.signed and not verified.signature_checked:
        err.print("[yellow]note:[/] the archive is signed; pass --key PUBKEY to check the signer")
    for name in loaded:
        err.print(f"loaded image {name}")
    print(archive.find_bundle(dest))
    how = "replay --on slurm" if args.no_load else "replay"
    err.print(f"replay it with: reprobox {how} {archive.find_bundle(dest)}")
    return 0


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
        "4 this host cannot replay it as captured (no GPU, old driver), "
        "5 an archive is corrupt, unsafe or badly signed, 6 Slurm refused or lost a job",
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
        ("compare", _compare, "compare a replay with its original, or any run B with A"),
        ("run", _run, "build + replay + compare"),
        ("show", _show, "show what a bundle recorded"),
    ):
        _add_bundle_verb(verbs, name, handler, helptext)
    _add_doctor(verbs)
    _add_archive_verbs(verbs)
    _add_export(verbs)
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
    sub.add_argument("--ulps", type=_whole_number, default=None,
                     help="float outputs this many units in the last place apart also agree")
    sub.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    _common(sub)
    sub.set_defaults(handler=_capture)


def _whole_number(text: str) -> int:
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return int(text)


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
    if name == "compare":
        _add_compared_runs(sub)
    else:
        sub.add_argument("bundle", nargs="?", help="bundle folder or run id (default: the newest)")
    if name in ("build", "run"):
        sub.add_argument("--base-image", help="build on this local image")
        sub.add_argument("-v", "--verbose", action="store_true", help="show the whole build log")
    if name in ("replay", "run"):
        sub.add_argument(
            "--timeout",
            type=_seconds_option,
            default=None,
            help="stop the replay after this many seconds (default: 6 hours)",
        )
        sub.add_argument("--memory", help="memory limit for the replay, e.g. 8g (default: none)")
        sub.add_argument("--cpu", action="store_true",
                         help="replay a GPU run on the CPU; outputs are judged by tolerance")
        sub.add_argument("--repeat", type=_replay_count, default=1, metavar="N",
                         help="replay N times in the same image and report how the replays "
                         "differ from each other (exit code: over all N)")
        sub.add_argument("--seeds", type=_seeds_option, default=(), metavar="LIST",
                         help="replay once per seed (e.g. 1,2,3 or 1-5) and report each "
                         "metric's mean, std and range beside the original's")
        _add_slurm_options(sub)
    if name in ("compare", "run", "show"):
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    if name in ("compare", "run"):
        sub.add_argument("--tolerance", action="append", default=[], type=_tolerance_option,
                         metavar="GLOB:KEY=V,...",
                         help="tolerance for the outputs matching GLOB, e.g. "
                         "'out/*.npy:rtol=1e-5,atol=0,ulps=4' (repeatable; the last match wins; "
                         "also read from <bundle>/settings.yaml)")
        sub.add_argument("--html", metavar="FILE",
                         help="also write the comparison as one self-contained HTML page")
    if name == "compare":
        sub.add_argument("--replay", help="the replay folder to compare (default: the newest)")
    _common(sub)
    sub.set_defaults(handler=handler)


def _add_compared_runs(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("bundle", nargs="?", metavar="A",
                     help="a bundle (folder or run id) or a replay folder "
                     "(.reprobox/runs/<run-id>/replays/<replay-id>); default: the newest bundle")
    sub.add_argument("other", nargs="?", metavar="B",
                     help="another run (bundle or replay folder) to compare with A, by A's "
                     "outputs and tolerances (default: A's newest replay, or A's original)")


def _add_slurm_options(sub: argparse.ArgumentParser, on: bool = True,
                       slurm_only: bool = True) -> None:
    """Slurm's options; `--gpus` alone where they are not Slurm's (exports to other engines)."""
    if on:
        sub.add_argument("--on", choices=("local", "slurm"), default="local",
                         help="where to replay: this host's Docker (default) or a Slurm job "
                         "(Docker or Apptainer on the node; the bundle on shared storage)")
    if not slurm_only:
        sub.add_argument("--gpus", type=_whole_number, default=0, metavar="N",
                         help="GPUs per replay (default: as many as the run used)")
        sub.set_defaults(partition=None, time=None, container_engine="auto")
        return
    slurm = sub.add_argument_group("Slurm (with --on slurm, or export slurm)")
    slurm.add_argument("--partition", help="the partition to submit to (default: Slurm's)")
    slurm.add_argument("--gpus", type=_whole_number, default=0, metavar="N",
                       help="GPUs per task (default: as many as the run used)")
    slurm.add_argument("--time", metavar="T",
                       help="the job's time limit, e.g. 90 or 01:30:00 (default: the partition's)")
    slurm.add_argument("--container-engine", choices=("auto", "docker", "apptainer"),
                       default="auto", help="what runs the image on the node (default: "
                       "Apptainer where the node has it, else Docker)")


def _seconds_option(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return seconds


def _seeds_option(text: str) -> tuple[int, ...]:
    from reprobox.errors import UsageError
    from reprobox.sweep import parse_seeds

    try:
        return parse_seeds(text)
    except UsageError as exc:
        message = str(exc).removeprefix("--seeds: ")
        raise argparse.ArgumentTypeError(f"{message} (hint: {exc.hint})") from None


def _replay_count(text: str) -> int:
    if not (text.strip().isascii() and text.strip().isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of replays ≥ 1, got {text!r}")
    return int(text)


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


def _add_export(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = verbs.add_parser("export", help="write a Slurm script, Kubernetes Job or Apptainer "
                           "recipe that replays a bundle (nothing is submitted)")
    targets = sub.add_subparsers(dest="target", required=True, metavar="TARGET")
    for target, helptext in (
        ("slurm", "a batch script (a job array for --seeds), Docker or Apptainer on the node"),
        ("kubernetes", "batch/v1 Jobs, one per seed, by image digest, hardened"),
        ("apptainer", "a definition file and the commands to build and run the SIF"),
    ):
        _add_export_target(targets.add_parser(target, help=helptext), target)


def _add_export_target(sub: argparse.ArgumentParser, target: str) -> None:
    sub.add_argument("bundle", nargs="?", help="bundle folder or run id (default: the newest)")
    where = "a new folder (default: <run-id>-apptainer)" if target == "apptainer" else \
        "the file to write (default: stdout)"
    sub.add_argument("-o", "--output", metavar="PATH", help=where)
    sub.add_argument("--seeds", type=_seeds_option, default=(), metavar="LIST",
                     help="one replay per seed (default: the captured seed)")
    sub.add_argument("--timeout", type=_seconds_option, default=None,
                     help="stop the replay after this many seconds (default: 6 hours)")
    sub.add_argument("--memory", help="memory limit for the replay, e.g. 8g")
    sub.add_argument("--cpu", action="store_true", help="replay a GPU run on the CPU")
    _add_slurm_options(sub, on=False, slurm_only=target == "slurm")
    if target == "kubernetes":
        sub.add_argument("--image", metavar="REF@sha256:...",
                         help="the pushed image by digest (default: the local image's, if "
                         "pushed)")
        sub.add_argument("--claim", default="reprobox-outputs",
                         help="PersistentVolumeClaim for the outputs (default: reprobox-outputs)")
        sub.add_argument("--inputs-claim", default="reprobox-inputs",
                         help="PersistentVolumeClaim holding the declared inputs")
        sub.add_argument("--namespace", help="the Jobs' namespace (default: kubectl's)")
    sub.set_defaults(image=None, claim="reprobox-outputs", inputs_claim="reprobox-inputs",
                     namespace=None)
    _common(sub)
    sub.set_defaults(handler=_export)


def _add_archive_verbs(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = verbs.add_parser("pack", help="pack a bundle and its images into one archive")
    sub.add_argument("bundle", nargs="?", help="bundle folder or run id (default: the newest)")
    sub.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the archive to write, e.g. exp.rbx")
    sub.add_argument("--sign", metavar="KEY", help="sign it with this SSH private key")
    _common(sub)
    sub.set_defaults(handler=_pack)
    sub = verbs.add_parser("verify", help="check an archive's checksums, format and signature")
    sub.add_argument("archive", metavar="FILE")
    sub.add_argument("--key", metavar="PUBKEY",
                     help="require a valid signature by this SSH public key")
    _common(sub)
    sub.set_defaults(handler=_verify)
    sub = verbs.add_parser("unpack", help="verify an archive, extract it and load its images")
    sub.add_argument("archive", metavar="FILE")
    sub.add_argument("dir", nargs="?", metavar="DIR",
                     help="a new or empty folder (default: the archive's name)")
    sub.add_argument("--no-load", action="store_true",
                     help="keep the images in DIR/images/images.tar without loading them "
                     "(a host without Docker, such as a cluster's login node: `replay --on "
                     "slurm` hands them to the nodes)")
    sub.add_argument("--key", metavar="PUBKEY",
                     help="require a valid signature by this SSH public key")
    _common(sub)
    sub.set_defaults(handler=_unpack)
