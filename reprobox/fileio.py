"""Atomic file writes and streaming digests: the only way reprobox puts bytes on disk.

Two digests, for two jobs. SHA-256 is for fixity: what the manifest records and archives carry,
checked against files that may have been tampered with. xxh3-128 (`fast_digest`) is for telling
whether two files reprobox just read hold the same bytes: ~20x faster here, and its 128 bits
make an accidental collision as unlikely as SHA-256's for that job (it is not a defence against
someone crafting one, which nothing compared on one machine needs).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xxhash

_CHUNK = 1 << 20
FAST_HASH = "xxh3-128"
_FAST_CHUNK = 1 << 22
_WHOLE_READ = 4 << 20  # smaller files are read in one call: cheaper than mapping them
_OWN_THREAD = 16 << 20  # larger files are worth a thread of their own


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have given it
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask (the bits a new file's mode loses)."""
    mask = os.umask(0o077)  # reading the umask means setting it; set it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`, renamed to `final` only if the block succeeds.

    Ctrl-C or an error inside the block removes the temporary folder, so a half-written
    bundle or replay never appears under its real name.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def fast_digest(path: Path) -> str:
    """The hex xxh3-128 of a file: for "same bytes?" checks, never for a recorded digest."""
    import xxhash  # imported here: `reprobox capture` never pays for it

    with path.open("rb", buffering=0) as handle:
        if os.fstat(handle.fileno()).st_size < _WHOLE_READ:  # /proc files say 0: read them too
            return xxhash.xxh3_128(handle.read()).hexdigest()
        # read in chunks, not mapped: memory stays one buffer however large the file
        digest = xxhash.xxh3_128()
        _update_from(handle, digest)
    return digest.hexdigest()


def _update_from(handle: io.RawIOBase, digest: xxhash.xxh3_128) -> None:
    buffer = bytearray(_FAST_CHUNK)
    view = memoryview(buffer)
    while size := handle.readinto(buffer):
        digest.update(view[:size])


def fast_digests(paths: Iterable[Path], workers: int | None = None) -> dict[Path, str]:
    """`fast_digest` of many files, in the order given; large files each on a thread of their own.

    xxhash lets go of the GIL, so large files hash side by side while this thread does the
    small ones (threads cost more than a small file takes).
    """
    unique = list(dict.fromkeys(paths))
    large = [path for path in unique if path.stat().st_size >= _OWN_THREAD]
    count = min(workers or os.cpu_count() or 1, len(large))
    if count <= 1:
        return {path: fast_digest(path) for path in unique}
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="reprobox-hash") as pool:
        pending = {path: pool.submit(fast_digest, path) for path in large}
        done = {path: fast_digest(path) for path in unique if path not in pending}
        return {path: done[path] if path in done else pending[path].result() for path in unique}
