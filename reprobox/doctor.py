"""Find the determinism hazards of an environment or of a bundle, each with its fix.

The checks are pure functions over `Facts`. Facts come from a bundle's manifest (and its source
snapshot), or from probing the current project and interpreter with the capture probes; that
probing is the thin layer at the end of this module.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from reprobox import cuda, lock, preflight
from reprobox.bundle import Bundle
from reprobox.capture import files, git, gpu, python_env
from reprobox.capture.runner import Runner, subprocess_runner
from reprobox.errors import CaptureError, PreflightError, ProbeUnavailable
from reprobox.manifest import CudaStack, Git, Gpus, Manifest, Package, Scalar

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: Mapping[str, int] = {"error": 0, "warning": 1, "info": 2}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
MAX_SCANNED_BYTES = 2 * 1000 * 1000  # larger .py files are generated code, not a training script
_LISTED = 5  # names or places shown in one message before "and N more"
# Local version labels that public wheel indexes serve (PyTorch's, JAX's): pinnable.
_CUDA_PACKAGES = ("nvidia-cublas", "nvidia-cudnn", "cupy-cuda", "jax-cuda")
# DataLoader(dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn,
#            pin_memory, drop_last, timeout, worker_init_fn, multiprocessing_context, generator)
_LOADER_POSITIONS = {"num_workers": 5, "worker_init_fn": 10, "generator": 12}
_NOT_CHECKED_FIX = "nothing to fix; this check was skipped"
GpuAnswer = tuple[Gpus | None, tuple[str, ...]]  # the host's GPUs (None: unknown) and notes
GpuProbe = Callable[[], GpuAnswer]


@dataclass(frozen=True, slots=True)
class Finding:
    """One hazard: a stable code, how bad it is, what was found, and how to fix it."""

    code: str  # "cudnn-benchmark"
    severity: Severity
    message: str
    fix: str


@dataclass(frozen=True, slots=True)
class SourceScan:
    """Where the project's Python files set hazardous flags, as "path:line"."""

    cudnn_benchmark: tuple[str, ...] = ()
    tf32: tuple[str, ...] = ()
    unseeded_loaders: tuple[str, ...] = ()  # DataLoader workers without worker_init_fn/generator
    unparsed: tuple[str, ...] = ()  # files that are not valid Python, so were not checked


@dataclass(frozen=True, slots=True)
class Facts:
    """What the checks look at, from a captured run or from this environment."""

    env: Mapping[str, str] = field(default_factory=dict)  # variables the run saw or would see
    state: Mapping[str, Scalar] = field(default_factory=dict)  # shim state at the end (bundles)
    deterministic: bool | None = None  # injected determinism; None for an environment
    packages: tuple[Package, ...] = ()
    git: Git | None = None  # None: not a git repository with a commit
    source: SourceScan = SourceScan()
    gpus: Gpus | None = None  # the GPUs the run had (bundle) or this host has (environment)
    host_gpus: Gpus | None = None  # this host's, compared with a bundle's; None: not compared
    cuda: CudaStack | None = None
    notes: tuple[str, ...] = ()  # what could not be checked, and why
    manifest: Manifest | None = None  # the bundle's, for the preflight's GPU questions


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The findings about one subject: "bundle <run-id>" or "project <path> with <python>"."""

    subject: str
    findings: tuple[Finding, ...]

    @property
    def hazardous(self) -> bool:
        """True when a finding is a warning or an error (notes alone do not count)."""
        return has_hazards(self.findings)


def diagnose(facts: Facts) -> tuple[Finding, ...]:
    """Every hazard in `facts`: errors first, then warnings, then notes."""
    found = [finding for check in _CHECKS for finding in check(facts)]
    return tuple(sorted(found, key=lambda finding: SEVERITY_ORDER[finding.severity]))


def has_hazards(findings: Iterable[Finding]) -> bool:
    """True when any finding is a warning or an error."""
    return any(finding.severity != "info" for finding in findings)


# --- the checks -------------------------------------------------------------------------------

Check = Callable[[Facts], Iterator[Finding]]


def _cudnn_benchmark(facts: Facts) -> Iterator[Finding]:
    where = list(facts.source.cudnn_benchmark)
    if facts.state.get("torch.cudnn.benchmark") is True:
        where.insert(0, "on at the end of the run")
    if where:
        yield Finding(
            "cudnn-benchmark", _gpu_severity(facts),
            f"cuDNN benchmark mode is on ({_listed(where)}): cuDNN times several convolution "
            "algorithms and keeps the fastest, which can change from run to run",
            "set torch.backends.cudnn.benchmark = False (reprobox turns it off at start, but "
            "code that turns it on later wins)")


def _tf32(facts: Facts) -> Iterator[Finding]:
    if facts.env.get("NVIDIA_TF32_OVERRIDE") == "0":
        return  # TF32 is off in every NVIDIA library, whatever torch says
    state = facts.state
    where = []
    if (state.get("torch.matmul.allow_tf32") is True
            or state.get("torch.float32_matmul_precision") in ("high", "medium")):
        where.append("matmul, at the end of the run")
    if state.get("torch.cudnn.allow_tf32") is True:
        where.append("cuDNN convolutions, at the end of the run")
    where += facts.source.tf32
    if where:
        yield Finding(
            "tf32", _gpu_severity(facts),
            f"TF32 is on ({_listed(where)}): on Ampere and newer GPUs float32 math runs with a "
            "10-bit mantissa, so results change with the GPU generation",
            "torch.backends.cuda.matmul.allow_tf32 = False, torch.backends.cudnn.allow_tf32 = "
            "False and torch.set_float32_matmul_precision(\"highest\"), or export "
            "NVIDIA_TF32_OVERRIDE=0")


def _cublas_workspace(facts: Facts) -> Iterator[Finding]:
    if facts.env.get("CUBLAS_WORKSPACE_CONFIG") or not _uses_cuda(facts):
        return
    yield Finding(
        "cublas-workspace", "warning",
        "CUBLAS_WORKSPACE_CONFIG is not set: cuBLAS may reduce in a different order from run "
        "to run, and torch before 2.10 refuses deterministic matmuls without it",
        "export CUBLAS_WORKSPACE_CONFIG=:4096:8 before Python starts (reprobox capture sets it)")


def _thread_counts(facts: Facts) -> Iterator[Finding]:
    unset = [name for name in THREAD_VARS if not facts.env.get(name)]
    if unset:
        yield Finding(
            "thread-counts", "warning",
            f"{', '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set: BLAS and OpenMP "
            "then use one thread per core, and another thread count sums in another order "
            "(float results change in the last bits)",
            "export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
            "(reprobox capture --threads N sets them)")


def _non_index_packages(facts: Facts) -> Iterator[Finding]:
    def of(source: str) -> list[Package]:
        return [package for package in facts.packages if package.source == source]

    vcs = of("vcs")
    kinds: list[tuple[str, Severity, list[Package], str, str]] = [
        ("editable-package", "warning", of("editable"),
         "installed editable: the code can change after capture while the version stays the same",
         "install a fixed copy (pip install PATH, without -e) or a release before capturing"),
        ("local-package", "warning", of("local"),
         "installed from a local path: the build needs the same files at the same path",
         "install it from a package index, or from a git URL at a commit"),
        ("vcs-package", "warning", [p for p in vcs if not p.commit],
         "installed from version control with no recorded commit: the build may get other code",
         "install it from a git URL pinned to a commit (pip install git+URL@COMMIT)"),
        ("vcs-package", "info", [p for p in vcs if p.commit],
         "installed from version control at a commit: the repository must stay reachable",
         "publish a release to a package index if the repository may move"),
        ("url-package", "info", of("url"),
         "installed from a URL: the build downloads it again, so the URL must still serve it",
         "install it from a package index, or keep the archive in the project"),
    ]
    for code, severity, packages, why, fix in kinds:
        if packages:
            yield Finding(code, severity, f"{_packages(packages)} {why}", fix)


def _unpinned_versions(facts: Facts) -> Iterator[Finding]:
    odd = [package for package in facts.packages
           if package.source == "index" and _unpinnable(package)]
    if odd:
        yield Finding(
            "unpinned-version", "warning",
            f"{_packages(odd)}: no public index serves this version (a local build or a "
            "private index), so the lock cannot fetch the same package",
            "install a released version from a package index, or install it from its source "
            "at a commit")


def _git_state(facts: Facts) -> Iterator[Finding]:
    if facts.git is None:
        yield Finding(
            "no-git", "warning",
            "no git commit: the project is not a git repository or has no commits, so the run "
            "cannot be tied to a version of its code",
            "git init && git add -A && git commit, then capture")
    elif facts.git.dirty:
        yield Finding(
            "dirty-tree", "warning",
            f"uncommitted changes in the git tree: commit {facts.git.commit[:12]} alone does not "
            "hold the code that runs (a bundle keeps them in git.diff)",
            "commit the changes, then capture")


def _dataloader_workers(facts: Facts) -> Iterator[Finding]:
    loaders = facts.source.unseeded_loaders
    if loaders:
        yield Finding(
            "dataloader-workers", "warning",
            f"DataLoader with worker processes and neither worker_init_fn nor generator "
            f"({_listed(loaders)}): worker seeds come from the global torch RNG, and other "
            "libraries' RNGs in the workers are not seeded",
            "pass generator=torch.Generator().manual_seed(SEED) and worker_init_fn=seed_worker "
            "(the recipe in PyTorch's reproducibility notes)")


def _deterministic_mode(facts: Facts) -> Iterator[Finding]:
    if facts.deterministic is False:
        yield Finding(
            "deterministic-off", "warning",
            "torch deterministic algorithms were off (captured with --no-deterministic): "
            "GPU ops such as index_add_ and scatter_add_ can give other results on every run",
            "capture again without --no-deterministic")
    elif facts.state.get("torch.deterministic_algorithms") is False:
        yield Finding(
            "deterministic-off", "warning",
            "the run turned torch deterministic algorithms off "
            "(use_deterministic_algorithms(False)): nondeterministic GPU kernels ran",
            "remove the call that turns them off, then capture again")


def _nondeterministic_ops(facts: Facts) -> Iterator[Finding]:
    ops = facts.state.get("torch.nondeterministic_ops")
    if isinstance(ops, str) and ops.strip():
        yield Finding(
            "nondeterministic-ops", "warning",
            f"ops with no deterministic kernel ran (warn-only mode): {ops}; their results can "
            "change from run to run",
            "avoid these ops (or run them on the CPU), or give the outputs a tolerance with "
            "capture --rtol/--atol")


def _seeding(facts: Facts) -> Iterator[Finding]:
    if facts.state.get("processes") == 0:
        yield Finding(
            "seeds-not-injected", "warning",
            "no Python process reported the shim's state: seeds and deterministic flags were "
            "probably not injected",
            "run Python without -I, -E or -S (they skip the shim), and let it exit normally "
            "(os._exit skips the report)")
    for library in ("random", "numpy"):
        if facts.state.get(f"{library}.reseeded_by_user") is True:
            yield _reseeded(library, facts.state.get(f"{library}.user_seed"))


def _reseeded(library: str, seed: Scalar) -> Finding:
    if seed is None:
        return Finding(
            "user-reseeded", "warning",
            f"the script reseeds {library} with no seed ({library}.seed()): it draws a fresh "
            "seed from the OS on every run",
            f"pass a fixed seed to {library}.seed, or remove the call and let reprobox seed it")
    return Finding(
        "user-reseeded", "info",
        f"the script seeds {library} itself ({library}.seed({seed})): reproducible, but "
        "reprobox's --seed does not change it",
        "nothing to fix; remove the call if --seed should take effect")


def _gpu_host(facts: Facts) -> Iterator[Finding]:
    """A bundle's GPUs against this host's: the questions the replay's preflight asks."""
    manifest, host = facts.manifest, facts.host_gpus
    if manifest is None or host is None or not (manifest.gpu and manifest.gpu.devices):
        return
    if not preflight.used_gpu(manifest):
        yield Finding(
            "gpu-unused", "info",
            f"captured on {manifest.gpu.describe()}, but the run did not use CUDA",
            "nothing to fix; it replays on the CPU")
        return
    try:
        plan = preflight.check(manifest, host, ("nvidia",), cpu=False)
    except PreflightError as exc:
        yield Finding(exc.code, "error", str(exc), exc.hint or "")
        return
    for concern in plan.concerns:
        yield Finding(concern.code, "warning", concern.message,
                      _GPU_FIXES.get(concern.code, _SAME_GPU_FIX))


_SAME_GPU_FIX = ("replay on the same GPU model for bitwise equality; elsewhere expect "
                 "tolerance-level differences (capture --rtol/--atol)")
_GPU_FIXES = {
    "gpu-count": "make as many GPUs visible to the replay as the run used (CUDA_VISIBLE_DEVICES)",
    "driver-minor": "upgrade the NVIDIA driver to one for the environment's CUDA version",
    "driver-floor": "upgrade the NVIDIA driver to the minimum the message names, or newer",
    "driver-older": "upgrade the NVIDIA driver to the run's version or newer",
}


def _not_checked(facts: Facts) -> Iterator[Finding]:
    for note in facts.notes:
        yield Finding("not-checked", "info", note, _NOT_CHECKED_FIX)
    if facts.source.unparsed:
        yield Finding(
            "not-checked", "info",
            f"not valid Python, so not checked: {_listed(facts.source.unparsed)}",
            _NOT_CHECKED_FIX)


_CHECKS: tuple[Check, ...] = (
    _gpu_host, _deterministic_mode, _nondeterministic_ops, _seeding, _cudnn_benchmark, _tf32,
    _cublas_workspace, _thread_counts, _dataloader_workers, _non_index_packages,
    _unpinned_versions, _git_state, _not_checked,
)


# --- helpers of the checks --------------------------------------------------------------------


def _uses_cuda(facts: Facts) -> bool:
    """Whether GPU settings matter: the run initialised CUDA, or CUDA builds are installed."""
    initialised = facts.state.get("torch.cuda.initialized")
    if isinstance(initialised, bool):
        return initialised
    if facts.cuda is not None and (facts.cuda.torch_cuda or facts.cuda.frameworks):
        return True
    return any(_is_cuda_package(package) for package in facts.packages)


def _is_cuda_package(package: Package) -> bool:
    label = package.version.partition("+")[2]
    return package.name.startswith(_CUDA_PACKAGES) or label.startswith("cu")


def _gpu_severity(facts: Facts) -> Severity:
    return "warning" if _uses_cuda(facts) else "info"


def _imaged(packages: Sequence[Package]) -> tuple[Package, ...]:
    """The packages an image would hold: reprobox itself is never among them."""
    return tuple(package for package in packages if package.name not in lock.EXCLUDED)


def _unpinnable(package: Package) -> bool:
    public, _, label = package.version.partition("+")
    if public.strip().lower() in ("", "unknown"):
        return True
    # a local label is fetchable only from an index the lock can name (PyTorch's, a recorded one)
    return bool(label) and cuda.package_index(package) is None


def _packages(packages: Sequence[Package]) -> str:
    shown = [f"{p.name} {p.version}" + (f" ({p.url})" if p.url else "") for p in packages]
    return _listed(shown)


def _listed(items: Sequence[str]) -> str:
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f" and {more} more" if more > 0 else "")


# --- the source scan --------------------------------------------------------------------------


def scan_sources(sources: Mapping[str, str]) -> SourceScan:
    """Scan Python files (path -> text) for hazardous flags and unseeded DataLoader workers."""
    scans = [scan_source(path, text) for path, text in sorted(sources.items())]
    return SourceScan(*(tuple(hit for scan in scans for hit in getattr(scan, f.name))
                        for f in dataclasses.fields(SourceScan)))


def scan_source(path: str, text: str) -> SourceScan:
    """Scan one Python file with `ast` (never by regex: comments and strings must not count)."""
    try:
        tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError):
        return SourceScan(unparsed=(path,))
    benchmark, tf32, loaders = [], [], []
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Assign):
            names = {_dotted(target) for target in node.targets}
            if _is_const(node.value, True) and any(n.endswith("cudnn.benchmark") for n in names):
                benchmark.append(where)
            if _enables_tf32(names, node.value):
                tf32.append(where)
        elif isinstance(node, ast.Call):
            if _sets_fast_matmul(node):
                tf32.append(where)
            if _unseeded_loader(node):
                loaders.append(where)
    return SourceScan(tuple(benchmark), tuple(tf32), tuple(loaders))


def _enables_tf32(targets: set[str], value: ast.expr) -> bool:
    if _is_const(value, True) and any(name.endswith("allow_tf32") for name in targets):
        return True
    # torch >= 2.9: torch.backends.cuda.matmul.fp32_precision = "tf32" (and cudnn.conv...)
    return _is_const(value, "tf32") and any(n.endswith("fp32_precision") for n in targets)


def _sets_fast_matmul(call: ast.Call) -> bool:
    if not _dotted(call.func).endswith("set_float32_matmul_precision"):
        return False
    value = call.args[0] if call.args else next(
        (k.value for k in call.keywords if k.arg == "precision"), None)
    return value is not None and (_is_const(value, "high") or _is_const(value, "medium"))


def _unseeded_loader(call: ast.Call) -> bool:
    """A DataLoader call that starts workers (or may) and sets neither seeding argument."""
    if _dotted(call.func).rpartition(".")[2] != "DataLoader":
        return False
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        return False  # *args/**kwargs: cannot tell what is passed
    workers = _argument(call, "num_workers")
    if workers is None or (isinstance(workers, ast.Constant) and not _positive(workers.value)):
        return False
    return all(_argument(call, name) is None or _is_const(_argument(call, name), None)
               for name in ("worker_init_fn", "generator"))


def _argument(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    position = _LOADER_POSITIONS[name]
    return call.args[position] if len(call.args) > position else None


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_const(node: ast.expr | None, value: object) -> bool:
    return (isinstance(node, ast.Constant) and type(node.value) is type(value)
            and node.value == value)


def _dotted(node: ast.expr) -> str:
    """`torch.backends.cudnn.benchmark` for an attribute chain; "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


# --- facts from a bundle, and from this environment -------------------------------------------


def facts_from_manifest(manifest: Manifest, sources: Mapping[str, str],
                        host_gpus: Gpus | None = None, notes: Sequence[str] = ()) -> Facts:
    """The facts of a captured run; `host_gpus` is this host's, to compare the run's GPUs with."""
    determinism = manifest.determinism
    return Facts(
        env=_run_env(manifest), state=determinism.state, deterministic=determinism.deterministic,
        packages=_imaged(manifest.python.packages), git=manifest.git,
        source=scan_sources(sources),
        gpus=manifest.gpu, host_gpus=host_gpus, cuda=manifest.cuda, notes=tuple(notes),
        manifest=manifest)


def _run_env(manifest: Manifest) -> dict[str, str]:
    """The variables the run saw: captured, then injected, then what the shim found at the end."""
    env = {**manifest.run.env, **manifest.determinism.env}
    for key, value in manifest.determinism.state.items():
        if key.startswith("env."):
            if value is None:
                env.pop(key[4:], None)
            else:
                env[key[4:]] = str(value)
    return env


def check_bundle(target: Bundle, probe_gpus: GpuProbe | None = None) -> Diagnosis:
    """The hazards of a captured run, its GPUs compared with this host's (`probe_gpus`)."""
    manifest = target.manifest()
    sources, notes = _bundle_sources(target, manifest)
    host: Gpus | None = None
    if manifest.gpu is not None and manifest.gpu.devices:
        host, gpu_notes = (probe_gpus or _probe_this_host)()
        notes += gpu_notes
    facts = facts_from_manifest(manifest, sources, host, notes)
    return Diagnosis(f"bundle {target.run_id}", diagnose(facts))


def _bundle_sources(target: Bundle, manifest: Manifest) -> tuple[dict[str, str], tuple[str, ...]]:
    folder = target.source_dir
    if not folder.is_dir():
        return {}, ("source: the bundle has no source/ folder; the code was not scanned",)
    root = folder.resolve()
    paths = [root / record.path for record in manifest.source_files
             if record.path.endswith(".py")]
    # A manifest is user input: never read outside the bundle's source folder.
    inside = [path for path in paths if path.resolve().is_relative_to(root)]
    return _read_python(root, inside), ()


def check_environment(cwd: Path, python: str | None = None, runner: Runner = subprocess_runner,
                      environ: Mapping[str, str] | None = None) -> Diagnosis:
    """The hazards of the project around `cwd` run with `python` (default: `python3` on PATH)."""
    environ = dict(os.environ) if environ is None else environ
    project = git.project_root(cwd.resolve(), runner)
    executable = find_interpreter(python, environ)
    try:
        record, _ = python_env.probe(executable, runner)
    except ProbeUnavailable as exc:
        raise CaptureError(str(exc), hint="pass --python the path of a working Python") from None
    git_record = _git_or_none(project, runner)
    sources, notes = _project_sources(project, runner)
    gpus, gpu_notes = probe_host_gpus(runner, environ)
    facts = Facts(env=environ, packages=_imaged(record.packages), git=git_record,
                  source=scan_sources(sources), gpus=gpus, notes=notes + gpu_notes)
    return Diagnosis(f"project {project} with {executable}", diagnose(facts))


def find_interpreter(python: str | None, environ: Mapping[str, str]) -> str:
    """The interpreter to check: `python` as given, else `python3`/`python` on PATH, else ours."""
    path = environ.get("PATH", os.defpath)
    if python is None:
        found = shutil.which("python3", path=path) or shutil.which("python", path=path)
        return os.path.abspath(found) if found else sys.executable
    found = python if os.sep in python else shutil.which(python, path=path)
    if not found or not Path(found).is_file():
        raise CaptureError(f"{python}: no such Python interpreter",
                           hint="pass --python the path of a Python interpreter")
    return os.path.abspath(found)


def _git_or_none(project: Path, runner: Runner) -> Git | None:
    try:
        return git.probe(project, runner)[0]
    except ProbeUnavailable:
        return None


def _project_sources(project: Path, runner: Runner) -> tuple[dict[str, str], tuple[str, ...]]:
    try:
        listed = files.source_files(project, runner, exclude=())
    except CaptureError as exc:
        return {}, (f"source: the code was not scanned ({exc})",)
    paths = [project / rel for rel in listed if rel.endswith(".py")]
    return _read_python(project, paths), ()


def _read_python(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    texts = {}
    for path in paths:
        try:
            if path.stat().st_size <= MAX_SCANNED_BYTES:
                texts[path.relative_to(root).as_posix()] = path.read_text("utf-8", "replace")
        except (OSError, ValueError):
            continue  # gone or unreadable: nothing to scan
    return texts


def _probe_this_host() -> GpuAnswer:
    return probe_host_gpus(subprocess_runner, os.environ)


def probe_host_gpus(runner: Runner, environ: Mapping[str, str]) -> GpuAnswer:
    """This host's GPUs through the capture probe; None (with a note) when it cannot say."""
    try:
        gpus, notes = gpu.probe(runner, environ)
    except ProbeUnavailable as exc:
        return None, (f"gpus: {exc}",)
    return gpus, tuple(notes)
