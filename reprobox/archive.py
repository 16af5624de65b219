"""One file per experiment: pack a bundle and its images, verify it, unpack it safely.

The format, version 1: a PAX tar stream compressed with zstandard (one stream, level 3,
multi-threaded), with members in this order:

```
rbx-format            "reprobox-archive 1\\n": read first, so a newer format is refused early
REPRODUCE.md          for people: what ran, on what, and how to replay it with or without reprobox
bundle/...            the bundle folder (manifest.yaml, requirements.lock, Dockerfile, build.json,
                      logs/, outputs/, source/, git.diff, settings.yaml); never replays/ or jobs/
images/images.tar     one `docker save` of the image named in build.json and, when it was made
                      locally (label reprobox.base), its base: layers they share are stored once
inputs/...            the run's declared inputs (--input), where `replay` finds them once unpacked
wheels/*.whl          the wheels the image was built from (those in this machine's wheel cache
                      whose SHA-256 requirements.lock pins): a rebuild needs no index
MANIFEST.sha256       "<sha256>  <path>" for every member above (BagIt's manifest)
MANIFEST.sha256.sig   optional: a signature of MANIFEST.sha256 (reprobox.signing)
```

Nothing in an archive is trusted before `verify` has read all of it: regular files and folders
only, relative paths without "..", no duplicates, size and count budgets, every digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from reprobox import lock, replay, wheelhouse
from reprobox.baseimage import LABEL_BASE
from reprobox.build import read_built
from reprobox.bundle import Bundle
from reprobox.engine import Engine
from reprobox.errors import ArchiveError, BundleError, ReproboxError
from reprobox.fileio import atomic_write, current_umask, sha256_file, staged_dir
from reprobox.reproduce import reproduce_md

FORMAT_VERSION = 1
FORMAT_MEMBER = "rbx-format"
MANIFEST_MEMBER = "MANIFEST.sha256"
SIGNATURE_MEMBER = "MANIFEST.sha256.sig"
_UNHASHED = frozenset({MANIFEST_MEMBER, SIGNATURE_MEMBER})  # the checksum list and its signature
IMAGE_MEMBER = "images/images.tar"
BUNDLE_FOLDER = "bundle"
WHEELS_FOLDER = "wheels"
MAX_TOTAL_BYTES = 64 << 30
MAX_MEMBERS = 100_000
MAX_RATIO = 200  # decompressed / compressed; docker images compress ~3x, a bomb ~1000x
RATIO_FLOOR = 64 << 20  # small archives may compress well: no ratio check below this
_SMALL_MEMBER = 1 << 20
_CHUNK = 1 << 20
_SKIPPED_IN_BUNDLE = ("replays", "jobs")

Progress = Callable[[str, int], None]  # (what is being done, bytes so far)


@dataclass(frozen=True, slots=True)
class Verified:
    """What a full verifying pass over an archive found."""

    path: Path
    format_version: int
    members: int
    archive_bytes: int
    signed: bool
    signature_checked: bool


# ---------------------------------------------------------------------------- pack


def pack(bundle: Bundle, out: Path, engine: Engine, on_progress: Progress,
         sign_key: Path | None = None) -> Path:
    """Write `bundle` and its images to `out`; `out` appears only when complete."""
    built = read_built(bundle)
    engine.ping()
    if not engine.has_image(built.tag):
        raise ArchiveError(f"image {built.tag} of {bundle.path} is not present locally",
                           hint="run `reprobox build` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # made to be shared: not mkstemp's 0600
        with os.fdopen(fd, "wb") as sink:
            _write_archive(sink, bundle, engine, _Writing(on_progress, sign_key, out))
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(name, out)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        if isinstance(exc, OSError):
            raise ArchiveError(f"{out}: could not be written ({exc.strerror or exc})",
                               hint="is the disk full? the previous archive, if any, is intact"
                               ) from None
        raise
    return out


@dataclass(frozen=True, slots=True)
class _Writing:
    on_progress: Progress
    sign_key: Path | None
    out: Path


def _write_archive(sink: BinaryIO, bundle: Bundle, engine: Engine, how: _Writing) -> None:
    import zstandard

    # the frame checksum catches a flipped byte even inside tar padding, which no digest covers
    compressor = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True)
    with compressor.stream_writer(sink, closefd=False) as zstream, tarfile.open(
        fileobj=zstream, mode="w|", format=tarfile.PAX_FORMAT
    ) as tar:
        writer = _Writer(tar, how.on_progress)
        _write_members(writer, bundle, engine, how.out)
        manifest = "".join(f"{digest}  {name}\n" for name, digest in writer.digests.items())
        writer.add_bytes(MANIFEST_MEMBER, manifest.encode())
        if how.sign_key is not None:
            writer.add_bytes(SIGNATURE_MEMBER, _signed(manifest.encode(), how.sign_key))


def _write_members(writer: _Writer, bundle: Bundle, engine: Engine, out: Path) -> None:
    """Every member before the manifest, in the order of the format."""
    writer.add_bytes(FORMAT_MEMBER, f"reprobox-archive {FORMAT_VERSION}\n".encode())
    built = read_built(bundle)
    base = built.base_image if _made_locally(engine, built.base_image) else None
    text = reproduce_md(bundle.manifest(), built.tag, base, out.name)
    writer.add_bytes("REPRODUCE.md", text.encode())
    for path, member in _bundle_files(bundle):
        writer.add_file(member, path)
    for record in bundle.manifest().inputs:  # checked against their digests, as replay does
        source = replay.inputs_root(bundle) / record.path
        if not source.is_file() or sha256_file(source) != record.sha256:
            raise ArchiveError(f"input {source} is missing or changed since capture",
                               hint="restore it: a replay on other data proves nothing")
        writer.add_file(f"{replay.UNPACKED_INPUTS}/{record.path}", source)
    writer.add_images(IMAGE_MEMBER, [built.tag, *([base] if base else [])], engine, out.parent)
    for wheel in _locked_wheels(bundle, wheelhouse.default_cache()):
        writer.add_file(f"{WHEELS_FOLDER}/{wheel.name}", wheel)


def _locked_wheels(bundle: Bundle, cache: Path) -> list[Path]:
    """The cached wheels whose SHA-256 the bundle's lock pins, one per file name."""
    lock_path = bundle.path / "requirements.lock"
    if not lock_path.is_file() or not cache.is_dir():
        return []
    pinned = {digest for pin in lock.loads(lock_path.read_text()).values() for digest in pin.hashes}
    found: dict[str, Path] = {}
    for wheel in sorted(cache.rglob("*.whl")):
        if wheel.name not in found and wheel.is_file() and sha256_file(wheel) in pinned:
            found[wheel.name] = wheel
    return list(found.values())


def _made_locally(engine: Engine, ref: str) -> bool:
    """A base image `reprobox base` made: no registry can give it back later."""
    return engine.has_image(ref) and bool(engine.image_labels(ref).get(LABEL_BASE))


def _signed(data: bytes, key: Path) -> bytes:
    from reprobox import signing

    try:
        return signing.sign(data, key)
    except ReproboxError as exc:
        raise ArchiveError(str(exc), hint=exc.hint) from None


def _bundle_files(bundle: Bundle) -> Iterator[tuple[Path, str]]:
    """Every file of the bundle, sorted, as (path, member name); a link is refused."""
    for path in sorted(bundle.path.rglob("*")):
        relative = path.relative_to(bundle.path)
        if relative.parts[0] in _SKIPPED_IN_BUNDLE or relative.parts[0].startswith("."):
            continue
        if path.is_symlink():
            raise ArchiveError(f"{path}: a link in the bundle cannot be archived",
                               hint="replace it with the file it points to")
        if path.is_file():
            yield path, f"{BUNDLE_FOLDER}/{relative.as_posix()}"


class _Writer:
    """Adds members to the tar stream, recording each one's SHA-256 and reporting progress."""

    def __init__(self, tar: tarfile.TarFile, on_progress: Progress) -> None:
        self.tar = tar
        self.on_progress = on_progress
        self.digests: dict[str, str] = {}
        self.done = 0

    def add_bytes(self, name: str, data: bytes) -> None:
        self._add(name, len(data), io.BytesIO(data))

    def add_file(self, name: str, path: Path) -> None:
        with path.open("rb") as source:
            self._add(name, os.fstat(source.fileno()).st_size, source)

    def add_images(self, name: str, refs: list[str], engine: Engine, scratch: Path) -> None:
        # a tar header needs the size first: spool the save beside the archive, not in /tmp
        saved = [0]

        def on_bytes(count: int) -> None:
            saved[0] += count
            self.on_progress(f"saving {' and '.join(refs)}", saved[0])

        with tempfile.TemporaryFile(prefix=".reprobox-save-", dir=scratch) as spool:
            engine.save_images(refs, spool, on_bytes)
            size = spool.tell()
            spool.seek(0)
            self._add(name, size, spool)

    def _add(self, name: str, size: int, source: IO[bytes]) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        hashing = _HashingReader(source, lambda n: self._progress(name, n))
        self.tar.addfile(info, hashing)
        if hashing.count != size:
            raise ArchiveError(f"{name} changed size while it was being packed",
                               hint="pack again when nothing is writing to the bundle")
        self.digests[name] = hashing.digest.hexdigest()

    def _progress(self, name: str, count: int) -> None:
        self.done += count
        self.on_progress(f"packing {name}", self.done)


class _HashingReader(io.RawIOBase):
    """A reader that hashes what passes through it and reports each chunk's length."""

    def __init__(self, source: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self.source = source
        self.on_bytes = on_bytes
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.count += len(data)
        self.on_bytes(len(data))
        return data


# ---------------------------------------------------------------------------- verify


def verify(path: Path, public_key: Path | None = None) -> Verified:
    """Read the whole archive once and check everything; ArchiveError on the first problem."""
    return _verify(path, public_key)[0]


def _verify(path: Path, public_key: Path | None) -> tuple[Verified, dict[str, str]]:
    checker = _Checker(path)
    with _members(path) as members:
        for member, data in members:
            checker.take(member, data)
    return checker.finish(public_key), checker.digests


class _Checker:
    """The state of one verifying pass: what has been seen, and what it must add up to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digests: dict[str, str] = {}
        self.seen: set[str] = set()
        self.version = 0
        self.manifest: bytes | None = None
        self.signature: bytes | None = None

    def take(self, member: tarfile.TarInfo, data: Iterator[bytes]) -> None:
        name = _checked_name(self.path, member, self.seen)
        if not self.seen and name != FORMAT_MEMBER:
            raise self._bad(f"does not start with {FORMAT_MEMBER}", "is it a reprobox archive?")
        self.seen.add(name)
        if self.signature is not None or (self.manifest is not None and name != SIGNATURE_MEMBER):
            raise self._bad(f"has a member after {MANIFEST_MEMBER}: {name}")
        if member.isdir():
            return
        if name in (FORMAT_MEMBER, MANIFEST_MEMBER, SIGNATURE_MEMBER):
            self._take_small(name, member, data)
        else:
            digest = hashlib.sha256()
            for chunk in data:
                digest.update(chunk)
            self.digests[name] = digest.hexdigest()

    def _take_small(self, name: str, member: tarfile.TarInfo, data: Iterator[bytes]) -> None:
        if member.size > _SMALL_MEMBER * 64:
            raise self._bad(f"{name} is implausibly large ({member.size} bytes)")
        content = b"".join(data)
        if name == FORMAT_MEMBER:
            self.version = _format_version(self.path, content)
            self.digests[name] = hashlib.sha256(content).hexdigest()
        elif name == MANIFEST_MEMBER:
            self.manifest = content
        else:
            self.signature = content

    def finish(self, public_key: Path | None) -> Verified:
        if self.manifest is None:
            raise self._bad(f"has no {MANIFEST_MEMBER} (truncated?)")
        self._check_digests(_parse_manifest(self.path, self.manifest))
        if public_key is not None:
            self._check_signature(self.manifest, public_key)
        total = len(self.digests)
        return Verified(self.path, self.version, total, self.path.stat().st_size,
                        self.signature is not None, public_key is not None)

    def _check_digests(self, listed: dict[str, str]) -> None:
        for name in sorted(set(listed) | set(self.digests)):
            if name not in self.digests:
                raise self._bad(f"lacks {name}, which its manifest lists")
            if name not in listed:
                raise self._bad(f"holds {name}, which its manifest does not list")
            if listed[name] != self.digests[name]:
                raise self._bad(f"{name} does not match its checksum (corrupt or tampered with)")

    def _check_signature(self, manifest: bytes, public_key: Path) -> None:
        if self.signature is None:
            raise self._bad("is not signed, and a signature was required (--key)",
                            "ask its author for a signed archive, or verify without --key")
        from reprobox import signing

        try:
            signing.verify(manifest, self.signature, public_key)
        except ReproboxError as exc:
            raise ArchiveError(f"{self.path}: {exc}", hint=exc.hint) from None

    def _bad(self, what: str, hint: str | None = None) -> ArchiveError:
        return ArchiveError(f"{self.path}: {what}",
                            hint=hint or "do not use this archive; get a fresh copy")


def _format_version(path: Path, content: bytes) -> int:
    magic, _, number = content.decode("utf-8", "replace").strip().partition(" ")
    if magic != "reprobox-archive" or not number.isdigit():
        raise ArchiveError(f"{path}: unknown format line {content[:40]!r}",
                           hint="is it a reprobox archive?")
    if int(number) > FORMAT_VERSION:
        raise ArchiveError(
            f"{path}: archive format {number} is newer than this reprobox reads ({FORMAT_VERSION})",
            hint="upgrade reprobox: pip install -U reprobox",
        )
    return int(number)


def _parse_manifest(path: Path, content: bytes) -> dict[str, str]:
    listed: dict[str, str] = {}
    for line in content.decode("utf-8", "replace").splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or name in listed:
            raise ArchiveError(f"{path}: {MANIFEST_MEMBER} has a bad line: {line[:80]!r}",
                               hint="do not use this archive; get a fresh copy")
        listed[name] = digest
    return listed


def _checked_name(path: Path, member: tarfile.TarInfo, seen: set[str]) -> str:
    """The member's name when it is a regular file or folder at a safe, new relative path."""
    name = member.name.rstrip("/")
    parts = PurePosixPath(name).parts
    if not (member.isreg() or member.isdir()):
        raise ArchiveError(f"{path}: member {name!r} is a {_kind(member)}, not a regular file",
                           hint="archives hold regular files and folders only; it was altered")
    if not name or name.startswith("/") or ".." in parts or "\\" in name or "\0" in name:
        raise ArchiveError(f"{path}: member {name!r} has an unsafe path",
                           hint="archives hold relative paths only; it was altered")
    if name in seen:
        raise ArchiveError(f"{path}: member {name!r} appears twice",
                           hint="do not use this archive; get a fresh copy")
    return name


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    return "FIFO" if member.isfifo() else "special member"


@contextlib.contextmanager
def _members(path: Path) -> Iterator[Iterator[tuple[tarfile.TarInfo, Iterator[bytes]]]]:
    """Stream the archive's members within the budgets; any damage becomes one ArchiveError."""
    import zstandard

    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read ({exc.strerror})",
                           hint="check the path") from None
    budget = _Budget(path, os.fstat(handle.fileno()).st_size)
    with handle, zstandard.ZstdDecompressor().stream_reader(
        handle, read_across_frames=True
    ) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield _iterate(tar, budget)
            _require_only_padding(path, stream)
        except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
            raise ArchiveError(f"{path}: truncated or corrupt ({exc})",
                               hint="do not use this archive; get a fresh copy") from None


def _require_only_padding(path: Path, stream: Any) -> None:
    """After the tar's end marker: zero blocks, then the end of the stream. Reading to the end
    also makes zstandard check the frame's checksum, which covers the tar's padding too."""
    while chunk := stream.read(1 << 20):
        if chunk.strip(b"\0"):
            raise ArchiveError(f"{path}: has data after the end of the archive",
                               hint="do not use this archive; get a fresh copy")


def _iterate(
    tar: tarfile.TarFile, budget: _Budget
) -> Iterator[tuple[tarfile.TarInfo, Iterator[bytes]]]:
    for member in tar:
        budget.take(member)
        yield member, _chunks(tar, member)


def _chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    source = tar.extractfile(member) if member.isreg() else None
    if source is None:
        return
    while chunk := source.read(_CHUNK):  # a short member raises ReadError: "unexpected end"
        yield chunk


@dataclass
class _Budget:
    """Size and count limits, checked on each header before its data is read."""

    path: Path
    compressed: int
    members: int = 0
    total: int = 0

    def take(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        self.total += max(member.size, 0)
        if self.members > MAX_MEMBERS:
            raise self._over(f"more than {MAX_MEMBERS} members")
        if self.total > MAX_TOTAL_BYTES:
            raise self._over(f"more than {MAX_TOTAL_BYTES >> 30} GiB of content")
        if self.total > max(RATIO_FLOOR, MAX_RATIO * self.compressed):
            raise self._over(f"content over {MAX_RATIO}x its compressed size "
                             "(a decompression bomb?)")

    def _over(self, what: str) -> ArchiveError:
        return ArchiveError(f"{self.path}: {what}; refused",
                            hint="archives of real runs stay well inside these limits")


# ---------------------------------------------------------------------------- unpack


def unpack(path: Path, dest: Path, engine: Engine, public_key: Path | None = None,
           on_progress: Progress | None = None, load: bool = True) -> tuple[Verified, list[str]]:
    """Verify, extract into a fresh `dest`, then `docker load` its images; returns what loaded.

    With `load` False the images stay in `dest/images/images.tar` only, for a host without
    Docker (a cluster's login node), whence `replay --on slurm` hands them to the nodes.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ArchiveError(f"{dest}: the destination is not empty",
                           hint="unpack into a new or empty folder")
    verified, digests = _verify(path, public_key)
    loaded: list[str] = []
    with staged_dir(dest) as staging:  # the folder appears only once its images are loaded
        _extract(path, staging, digests, on_progress or (lambda _what, _done: None))
        image = staging / IMAGE_MEMBER
        if load and image.is_file():
            with image.open("rb") as stream:
                loaded.extend(engine.load_image(stream))
    _seed_wheel_cache(dest / WHEELS_FOLDER, wheelhouse.default_cache())
    return verified, loaded


def _seed_wheel_cache(wheels: Path, cache: Path) -> None:
    """Put the archive's wheels where `reprobox build` looks first, so a rebuild needs no index;
    a wheel already there under the same name is left as it is."""
    if not wheels.is_dir():
        return
    cache.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(wheels.glob("*.whl")):
        target = cache / wheel.name
        if wheel.is_file() and not wheel.is_symlink() and not target.exists():
            atomic_write(target, wheel.read_bytes())


def _extract(path: Path, into: Path, digests: dict[str, str], on_progress: Progress) -> None:
    # each digest is checked again: the file may have changed since the verifying pass
    written: set[str] = set()
    done = 0
    with _members(path) as members:
        for member, data in members:
            name = _checked_name(path, member, written)
            written.add(name)
            target = into / name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = _write_new(target, data)
            done += member.size
            on_progress(f"extracting {name}", done)
            if digests.get(name, digest if name in _UNHASHED else None) != digest:
                raise ArchiveError(f"{path}: {name} changed while it was being unpacked",
                                   hint="unpack again from a copy nothing writes to")
    if not set(digests) <= written:
        raise ArchiveError(f"{path}: changed while it was being unpacked",
                           hint="unpack again from a copy nothing writes to")


def _write_new(target: Path, data: Iterator[bytes]) -> str:
    """Write a new file, never through a link; returns its SHA-256."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    digest = hashlib.sha256()
    with os.fdopen(os.open(target, flags, 0o644), "wb") as sink:
        for chunk in data:
            sink.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def find_bundle(dest: Path) -> Path:
    """The bundle folder of an unpacked archive."""
    folder = dest / BUNDLE_FOLDER
    if not (folder / "manifest.yaml").is_file():
        raise BundleError(f"{dest}: no bundle/manifest.yaml", hint="is it an unpacked archive?")
    return folder
