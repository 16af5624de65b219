"""Choose a base image for a Python version, or bootstrap one locally when no registry answers.

An environment that needs the system CUDA toolkit gets the nvidia/cuda image `cuda.base_image`
names instead; such a base must carry python3 with venv, which nvidia/cuda images do not.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from reprobox.cuda import CudaBase
from reprobox.engine import ContainerSpec, Engine
from reprobox.errors import BaseImageError, EngineError

SUITES_FILE = Path(__file__).parent / "data" / "debian_suites.yaml"
GLIBC_FILE = Path(__file__).parent / "data" / "debian_glibc.yaml"
VENV = "/opt/venv"
LABEL_BASE = "reprobox.base"
LABEL_PYTHON = "reprobox.python.version"
LABEL_SUITE = "reprobox.base.suite"
PACKAGES = ("python3", "python3-venv", "ca-certificates", "netbase", "tzdata")
_APT_DIR = Path("/etc/apt")
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_VERSION = re.compile(r"\b(\d+\.\d+\.\d+)\b")
_MIRROR_SCHEMES = ("http://", "https://", "ftp://", "file:")
# Removed after debootstrap: caches, package lists, docs and logs nothing at run time reads.
_SLIM_GLOBS = (
    "var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
    "var/log/*", "var/cache/debconf/*-old", "var/cache/ldconfig/aux-cache",
    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "usr/share/doc/*/*",
)
# Docker bind-mounts these at run time; the host's copies must not end up in the image.
_HOST_FILES = ("etc/resolv.conf", "etc/hostname")


@dataclass(frozen=True, slots=True)
class BaseImage:
    """The image a build starts FROM, with the Python version it actually has."""

    ref: str
    python_version: str
    origin: str  # "official" | "local" | "user" | "cuda"
    digest: str | None = None  # "sha256:…" the registry served it under; None when not pulled

    @property
    def pinned(self) -> str:
        """What a Dockerfile names: `ref@sha256:…` when a registry gave a digest, else `ref`."""
        return f"{self.ref}@{self.digest}" if self.digest else self.ref


# ---------------------------------------------------------------------------- names and tables


def official_ref(python_version: str, suite: str = "bookworm") -> str:
    """The official slim image of an exact Python version: python:3.11.7-slim-bookworm."""
    return f"python:{python_version}-slim-{suite}"


def local_ref(python_xy: str, suite: str) -> str:
    """The name `reprobox base` gives its image: reprobox/python:3.11-bookworm."""
    return f"reprobox/python:{python_xy}-{suite}"


def suite_table() -> dict[str, str]:
    """Python X.Y -> the Debian suite whose python3 it is (from the data file)."""
    table = yaml.safe_load(SUITES_FILE.read_text(encoding="utf-8")) or {}
    return {str(version): str(suite) for version, suite in table.items()}


def python_xy(python_version: str) -> str:
    """'3.11.7' -> '3.11'."""
    return ".".join(python_version.split(".")[:2])


def suite_for(xy: str) -> str:
    """The Debian suite whose python3 is `xy`; BaseImageError when there is none."""
    table = suite_table()
    if xy not in table:
        raise BaseImageError(
            f"no Debian suite ships Python {xy}; a local base image can be bootstrapped only "
            f"for Python {', '.join(sorted(table, key=_version_key))}",
            hint="pass --base-image IMAGE with a local image that has that Python",
        )
    return table[xy]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _resolve_target(xy: str | None, suite: str | None) -> tuple[str, str]:
    """Fill in whichever of (Python X.Y, suite) is missing; the two must agree."""
    table = suite_table()
    if suite and not xy:
        by_suite = {name: version for version, name in table.items()}
        if suite not in by_suite:
            raise BaseImageError(f"unknown Debian suite {suite!r}",
                                 hint=f"known suites: {', '.join(sorted(by_suite))}")
        return by_suite[suite], suite
    xy = xy or _host_python_xy()
    expected = suite_for(xy)
    if suite and suite != expected:
        raise BaseImageError(f"Debian {suite} does not ship Python {xy} (it is in {expected})",
                             hint=f"leave out --suite, or pass --suite {expected}")
    return xy, expected


def _host_python_xy() -> str:
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}"


# ---------------------------------------------------------------------------- the apt mirror


def debian_mirror(apt_dir: Path = _APT_DIR) -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    known = set(suite_table().values())
    fallback = ""
    for uri, suites in _apt_sources(apt_dir):
        if not uri.startswith(_MIRROR_SCHEMES):
            continue
        if known & set(suites):
            return uri.rstrip("/")
        if not fallback and uri.rstrip("/").endswith("/debian"):
            fallback = uri.rstrip("/")
    if fallback:
        return fallback
    raise BaseImageError(f"no Debian mirror found in the apt sources under {apt_dir}",
                         hint="pass --mirror URL (a Debian archive mirror)")


def _apt_sources(apt_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of every enabled `deb` source, in apt's order."""
    parts = apt_dir / "sources.list.d"
    one_line = [apt_dir / "sources.list", *sorted(parts.glob("*.list"))]
    for path in one_line:
        if path.is_file():
            yield from _one_line_sources(path.read_text(encoding="utf-8", errors="replace"))
    for path in sorted(parts.glob("*.sources")):
        yield from _deb822_sources(path.read_text(encoding="utf-8", errors="replace"))


def _one_line_sources(text: str) -> Iterator[tuple[str, list[str]]]:
    for raw in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", raw.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            yield line[1], [line[2]]


def _deb822_sources(text: str) -> Iterator[tuple[str, list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields = _deb822_fields(stanza)
        enabled = fields.get("enabled", "yes").lower() != "no"
        if enabled and "deb" in fields.get("types", "").split():
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and key:
            fields[key] += " " + line.strip()
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        fields[key] = value.strip()
    return fields


# ---------------------------------------------------------------------------- make


def make(
    engine: Engine,
    python_xy: str | None,
    suite: str | None,
    mirror: str | None,
    on_line: Callable[[str], None],
    force: bool = False,
) -> BaseImage:
    """Bootstrap a Debian base image with Python in /opt/venv; tag it only when it is complete.

    An image already made is kept unless `force`: making one takes a minute and the network.
    """
    xy, suite = _resolve_target(python_xy, suite)
    ref = local_ref(xy, suite)
    if not force and engine.has_image(ref):
        return BaseImage(ref, python_version_in(engine, ref), "local")
    debootstrap = _require_debootstrap()
    mirror = mirror or debian_mirror()
    with _scratch_dir() as work:
        rootfs = work / "rootfs"
        on_line(f"debootstrap {suite} from {mirror} (takes about a minute)")
        _debootstrap(debootstrap, suite, rootfs, mirror, on_line)
        version = _dpkg_python_version(rootfs, xy)
        on_line(f"Python {version}; slimming and importing the root filesystem")
        rootfs_tar = _slim_and_tar(rootfs, work / "rootfs.tar")
        imported = engine.import_rootfs(rootfs_tar, "", changes=("ENV LANG=C.UTF-8",))
        labels = {LABEL_BASE: "1", LABEL_PYTHON: version, LABEL_SUITE: suite}
        on_line(f"creating the venv at {VENV}")
        try:
            image_id = engine.build(_venv_context(imported, work / "context.tar"), labels, on_line)
        except BaseException:
            engine.remove_image(imported)  # on success it lives on as the tagged image's parent
            raise
        engine.tag(image_id, ref)
    on_line(f"built {ref} (Python {version})")
    return BaseImage(ref=ref, python_version=version, origin="local")


def _require_debootstrap() -> str:
    path = shutil.which("debootstrap") or shutil.which(
        "debootstrap", path=os.pathsep.join(_SBIN_DIRS))
    if not path:
        raise BaseImageError("debootstrap is not installed, so no base image can be bootstrapped",
                             hint="install it (`apt-get install debootstrap`), "
                             "or pass --base-image IMAGE")
    if os.geteuid() != 0:
        raise BaseImageError("bootstrapping a base image needs root (debootstrap chroots)",
                             hint="run `sudo reprobox base ...`, or pass --base-image IMAGE")
    return path


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A private folder on a disk that allows exec and device nodes, removed on any exit."""
    work = Path(tempfile.mkdtemp(prefix="reprobox-base-", dir=_scratch_parent()))
    try:
        yield work
    finally:
        _remove_tree(work)


def _scratch_parent() -> str | None:
    # /tmp is often a small tmpfs; /var/tmp is on disk on Debian.
    return "/var/tmp" if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK) else None


def _debootstrap(
    debootstrap: str, suite: str, rootfs: Path, mirror: str, on_line: Callable[[str], None]
) -> None:
    argv = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}",
            suite, str(rootfs), mirror]
    tail = _stream(argv, on_line)
    if tail.returncode:
        raise BaseImageError(
            f"debootstrap of Debian {suite} from {mirror} failed "
            f"(exit {tail.returncode}): {tail.last_line}",
            hint="check the mirror (--mirror URL) and the network to it",
        )


@dataclass(frozen=True, slots=True)
class _Finished:
    returncode: int
    last_line: str


def _stream(argv: list[str], on_line: Callable[[str], None]) -> _Finished:
    """Run argv, passing each output line on; on Ctrl-C stop it before re-raising."""
    last = ""
    # Its own process group, so that stopping it also stops the dpkg it runs in the chroot.
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", start_new_session=True) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                last = line.rstrip() or last
                on_line(last)
            proc.wait()
        except BaseException:
            _stop(proc)
            raise
    return _Finished(proc.returncode, last)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ask the whole group to stop, give it 20 s, then kill whatever of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _dpkg_python_version(rootfs: Path, xy: str) -> str:
    """The exact upstream version of the python{xy} package installed in `rootfs`."""
    status = rootfs / "var/lib/dpkg/status"
    text = status.read_text(encoding="utf-8", errors="replace") if status.is_file() else ""
    for stanza in re.split(r"\n\s*\n", text):
        fields = _deb822_fields(stanza)
        if fields.get("package") == f"python{xy}" and "installed" in fields.get("status", ""):
            match = _VERSION.match(fields.get("version", ""))
            if match:
                return match.group(1)
    raise BaseImageError(f"the bootstrapped system has no python{xy} package",
                         hint="the suite's python3 is another version; check "
                         f"{SUITES_FILE.name}")


def _slim_and_tar(rootfs: Path, tar_path: Path) -> Path:
    for pattern in _SLIM_GLOBS:
        for path in rootfs.glob(pattern):
            if path.name != "copyright":
                _remove_path(path)
    for name in _HOST_FILES:
        target = rootfs / name
        if target.is_file() and not target.is_symlink():
            target.write_text("")
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar_path), "."],
                   check=True, capture_output=True)
    return tar_path


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _venv_context(base_id: str, tar_path: Path) -> Path:
    """A build context: the imported rootfs plus a venv on PATH, offline."""
    dockerfile = (
        f"FROM {base_id}\n"
        f"RUN python3 -m venv {VENV} && {VENV}/bin/python -m pip --version\n"
        f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
        "/usr/bin:/sbin:/bin PYTHONNOUSERSITE=1 LANG=C.UTF-8\n"
        'CMD ["python"]\n'
    ).encode()
    with tarfile.open(tar_path, "w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    return tar_path


def _remove_tree(root: Path) -> None:
    """Remove a scratch tree; unmount what an interrupted debootstrap left mounted in it first."""
    for mount_point in _mounts_under(root):
        subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)
    if _mounts_under(root):
        raise BaseImageError(f"{root} still has file systems mounted in it; not removing it",
                             hint=f"unmount them (`findmnt -R {root}`), then delete {root}")
    shutil.rmtree(root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    """Mount points below `root`, deepest first (from /proc/self/mountinfo)."""
    info = Path("/proc/self/mountinfo")
    if not info.is_file():
        return []
    prefix = str(root.resolve()) + "/"
    points = []
    for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


# ---------------------------------------------------------------------------- choose


def choose(
    engine: Engine,
    python_version: str,
    explicit: str | None,
    on_line: Callable[[str], None],
    cuda_base: CudaBase | None = None,
) -> BaseImage:
    """The base image for a captured Python: explicit, the CUDA base the environment needs,
    official (local or pulled), or local."""
    if explicit:
        return _explicit(engine, explicit)
    if cuda_base is not None:
        return _cuda(engine, cuda_base, on_line)
    official = official_ref(python_version)
    if engine.has_image(official):
        return _registry_image(engine, official, python_version, "official")
    try:
        engine.pull(official)
        return _registry_image(engine, official, python_version, "official")
    except BaseImageError as exc:
        pull_error = str(exc)
    local = _local_base(engine, python_xy(python_version))
    if local is None:
        xy = python_xy(python_version)
        raise BaseImageError(
            f"no registry answers and no local base image for Python {xy}",
            hint=f"run `reprobox base --python {xy}` (builds one with debootstrap), "
            "or pass --base-image IMAGE",
        )
    on_line(f"no registry answered ({pull_error}); using the local base image {local.ref} "
            f"with Python {local.python_version} (captured: Python {python_version})")
    return local


def _explicit(engine: Engine, ref: str) -> BaseImage:
    if not engine.has_image(ref):
        raise BaseImageError(f"image {ref} is not present locally",
                             hint="`docker load -i IMAGE.tar` it first, or build a base "
                             "with `reprobox base`")
    return BaseImage(ref, python_version_in(engine, ref), "user")


def _cuda(engine: Engine, base: CudaBase, on_line: Callable[[str], None]) -> BaseImage:
    """The nvidia/cuda image, present or pulled, once it is known to carry python3."""
    recipe = (f"make one FROM {base.image} with `apt-get install python3 python3-venv`, "
              "`docker load -i` it here, and pass it with --base-image IMAGE")
    if not engine.has_image(base.image):
        try:
            engine.pull(base.image)
        except BaseImageError:
            raise BaseImageError(
                f"image {base.image} is not present locally and no registry answers; this run "
                f"needs the system CUDA toolkit ({base.reason}), on a base with python3 and venv",
                hint=recipe) from None
    try:
        version = python_version_in(engine, base.image)
    except BaseImageError:
        raise BaseImageError(
            f"image {base.image} has no python3; a CUDA base must carry python3 with venv",
            hint=recipe) from None
    on_line(f"using the CUDA base image {base.image}: {base.reason}")
    return _registry_image(engine, base.image, version, "cuda")


def _registry_image(engine: Engine, ref: str, python_version: str, origin: str) -> BaseImage:
    """A base from a registry, pinned by the digest it was served under when there is one."""
    digest = engine.repo_digest(ref)
    return BaseImage(ref, python_version, origin, digest.partition("@")[2] if digest else None)


def _local_base(engine: Engine, xy: str) -> BaseImage | None:
    suite = suite_table().get(xy)
    if suite is None or not engine.has_image(local_ref(xy, suite)):
        return None
    ref = local_ref(xy, suite)
    return BaseImage(ref, python_version_in(engine, ref), "local")


def glibc_in(engine: Engine, ref: str) -> str:
    """The glibc version of an image: from its Debian suite when known, else asked of it."""
    table = yaml.safe_load(GLIBC_FILE.read_text(encoding="utf-8")) or {}
    suite = engine.image_labels(ref).get(LABEL_SUITE) or ref.rpartition("-")[2]
    if suite in table:
        return str(table[suite])
    for program in ("python3", "python"):
        with contextlib.suppress(EngineError):
            answer = _ask_python(engine, ref, program, "platform.libc_ver()[1]")
            if answer:
                return answer
    raise BaseImageError(f"cannot tell which glibc image {ref} has",
                         hint="a base image needs glibc and python3 on its PATH")


def python_version_in(engine: Engine, ref: str) -> str:
    """The exact Python version in an image: its reprobox label, else asked of `python3`."""
    labelled = engine.image_labels(ref).get(LABEL_PYTHON)
    if labelled:
        return labelled
    for program in ("python3", "python"):
        with contextlib.suppress(EngineError):
            match = _VERSION.search(_ask_python(engine, ref, program, "platform.python_version()"))
            if match:
                return match.group(1)
    raise BaseImageError(f"cannot tell which Python image {ref} has",
                         hint="a base image needs python3 on its PATH")


def _ask_python(engine: Engine, ref: str, program: str, expression: str) -> str:
    """The value of a `platform` expression as the image's Python prints it ("" if it cannot)."""
    output = bytearray()
    spec = ContainerSpec(
        image=ref, env={},
        argv=(program, "-c", f"import platform; print({expression})"),
        workdir="/", timeout_s=60,
    )
    result = engine.run(spec, output.extend)
    lines = output.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if result.exit_code == 0 and lines else ""
