"""Archives: real pack/verify/unpack round trips, and every kind of bad archive refused."""

from __future__ import annotations

import errno
import hashlib
import io
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
import zstandard

from reprobox import archive, cli
from reprobox.bundle import Bundle
from reprobox.errors import ArchiveError
from reprobox.manifest import Manifest
from tests.unit.fakes import FakeEngine
from tests.unit.scripted import BUILT, bundle_with_outputs

IMAGE = b"a saved image\n" * 5000
BASE = b"a saved base image\n" * 100


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(images={BUILT.tag}, saved={BUILT.tag: IMAGE})


@pytest.fixture
def packed_bundle(tmp_path: Path, sample_manifest: Manifest) -> Bundle:
    bundle = bundle_with_outputs(tmp_path / "proj", sample_manifest, {"out/w.txt": b"weights"})
    (bundle.replays_dir / "x").mkdir(parents=True)
    (bundle.replays_dir / "x" / "comparison.json").write_text("{}")
    return bundle


def _pack(bundle: Bundle, engine: FakeEngine, out: Path, key: Path | None = None) -> Path:
    return archive.pack(bundle, out, engine, lambda _what, _done: None, sign_key=key)


def _names(path: Path) -> list[str]:
    data = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True)
    with data, tarfile.open(fileobj=data, mode="r|") as tar:
        return [member.name for member in tar]


# ---------------------------------------------------------------------------- good archives


def test_pack_verify_unpack_round_trip(packed_bundle: Bundle, engine: FakeEngine,
                                       tmp_path: Path) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    names = _names(out)
    assert names[:2] == ["rbx-format", "REPRODUCE.md"]
    assert names[-2:] == ["images/images.tar", "MANIFEST.sha256"]
    assert "bundle/manifest.yaml" in names and "bundle/outputs/out/w.txt" in names
    assert not any("replays" in name for name in names)
    verified = archive.verify(out)
    assert (verified.format_version, verified.signed) == (1, False)
    dest = tmp_path / "there"
    _, loaded = archive.unpack(out, dest, FakeEngine(saved={BUILT.tag: IMAGE}))
    assert loaded == [BUILT.tag]
    assert (dest / "bundle" / "outputs" / "out" / "w.txt").read_bytes() == b"weights"
    assert (dest / "images" / "images.tar").read_bytes() == IMAGE
    assert archive.find_bundle(dest) == dest / "bundle"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_locally_made_base_image_is_packed_too(packed_bundle: Bundle, tmp_path: Path) -> None:
    engine = FakeEngine(images={BUILT.tag, "base:1"}, saved={BUILT.tag: IMAGE, "base:1": BASE},
                        labels={"base:1": {"reprobox.base": "1"}})
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    # one `docker save` of both: the layers they share are stored once
    assert [n for n in _names(out) if n.startswith("images/")] == ["images/images.tar"]
    loader = FakeEngine(saved={BUILT.tag: IMAGE, "base:1": BASE})
    assert sorted(archive.unpack(out, tmp_path / "d", loader)[1]) == sorted([BUILT.tag, "base:1"])


def test_pack_without_the_image_is_refused(packed_bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="is not present locally"):
        _pack(packed_bundle, FakeEngine(), tmp_path / "exp.rbx")
    assert list(tmp_path.glob("*.rbx*")) == []


def test_an_empty_destination_folder_is_used(packed_bundle: Bundle, engine: FakeEngine,
                                             tmp_path: Path) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    (tmp_path / "empty").mkdir()
    archive.unpack(out, tmp_path / "empty", engine)
    assert (tmp_path / "empty" / "bundle" / "manifest.yaml").is_file()


# ---------------------------------------------------------------------------- interrupted pack


def test_an_interrupted_pack_leaves_the_previous_archive(packed_bundle: Bundle,
                                                         engine: FakeEngine,
                                                         tmp_path: Path) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    before = out.read_bytes()

    def interrupt(what: str, _done: int) -> None:
        if "image" in what:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        archive.pack(packed_bundle, out, engine, interrupt)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.rbx", "proj"]


def test_a_full_disk_during_pack_is_one_error_and_leaves_nothing(packed_bundle: Bundle,
                                                                 engine: FakeEngine,
                                                                 tmp_path: Path) -> None:
    def disk_full(what: str, _done: int) -> None:
        if "image" in what:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ArchiveError, match="exp.rbx: could not be written .No space left"):
        archive.pack(packed_bundle, tmp_path / "exp.rbx", engine, disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


# ---------------------------------------------------------------------------- damaged archives


def _refused(path: Path, match: str, tmp_path: Path, key: Path | None = None) -> None:
    """Both verify and unpack refuse `path`; unpack writes nothing and loads nothing."""
    with pytest.raises(ArchiveError, match=match):
        archive.verify(path, key)
    engine = FakeEngine()
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError, match=match) as caught:
        archive.unpack(path, dest, engine, key)
    assert "\n" not in str(caught.value)
    assert not dest.exists() and engine.loads == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dest")]


def test_a_flipped_byte_is_refused(packed_bundle: Bundle, engine: FakeEngine,
                                   tmp_path: Path) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    out.write_bytes(bytes(data))
    _refused(out, "corrupt", tmp_path)


def test_a_tampered_member_with_a_valid_stream_is_refused(tmp_path: Path) -> None:
    good = [_file("bundle/a.txt", b"original")]
    path = _write(tmp_path / "t.rbx", good, manifest_of=good)
    _write(path, [_file("bundle/a.txt", b"tampered")], manifest_of=good)
    _refused(path, "bundle/a.txt does not match its checksum", tmp_path)


def test_a_truncated_archive_is_refused(packed_bundle: Bundle, engine: FakeEngine,
                                        tmp_path: Path) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    _refused(out, "truncated or corrupt", tmp_path)


def test_missing_and_extra_members_are_refused(tmp_path: Path) -> None:
    a, b = _file("bundle/a.txt", b"a"), _file("bundle/b.txt", b"b")
    _refused(_write(tmp_path / "m.rbx", [a], manifest_of=[a, b]), "lacks bundle/b.txt", tmp_path)
    _refused(_write(tmp_path / "e.rbx", [a, b], manifest_of=[a]), "does not list", tmp_path)
    _refused(_write(tmp_path / "n.rbx", [a], manifest_of=None), "no MANIFEST", tmp_path)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "device"),
        (tarfile.BLKTYPE, "device"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_links_devices_and_fifos_are_refused(kind: bytes, match: str, tmp_path: Path) -> None:
    info = tarfile.TarInfo("bundle/evil")
    info.type, info.linkname = kind, "/etc/passwd"
    _refused(_write(tmp_path / "x.rbx", [(info, b"")], manifest_of=[]), match, tmp_path)


@pytest.mark.parametrize("name", ["../evil.txt", "bundle/../../evil.txt", "/tmp/evil.txt"])
def test_escaping_paths_are_refused(name: str, tmp_path: Path) -> None:
    member = _file(name, b"x")
    _refused(_write(tmp_path / "x.rbx", [member], manifest_of=[member]), "unsafe path",
             tmp_path)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_duplicate_member_is_refused(tmp_path: Path) -> None:
    a = _file("bundle/a.txt", b"a")
    _refused(_write(tmp_path / "x.rbx", [a, a], manifest_of=[a]), "appears twice", tmp_path)


def test_a_decompression_bomb_is_refused(tmp_path: Path) -> None:
    bomb = _file("bundle/zeros", bytes(archive.RATIO_FLOOR + 1))
    path = _write(tmp_path / "bomb.rbx", [bomb], manifest_of=[bomb])
    assert path.stat().st_size < 1 << 20
    _refused(path, "decompression bomb", tmp_path)


def test_a_header_claiming_too_much_is_refused_before_reading(tmp_path: Path) -> None:
    info = tarfile.TarInfo("bundle/huge")
    info.size = archive.MAX_TOTAL_BYTES + 1
    header = _format_header() + info.tobuf(tarfile.PAX_FORMAT)
    path = tmp_path / "huge.rbx"
    path.write_bytes(zstandard.ZstdCompressor().compress(header))
    _refused(path, "GiB of content", tmp_path)


def test_a_newer_format_is_refused_with_an_upgrade_hint(tmp_path: Path) -> None:
    path = _write(tmp_path / "new.rbx", [], manifest_of=[], version=2)
    with pytest.raises(ArchiveError, match="format 2 is newer") as caught:
        archive.verify(path)
    assert "upgrade" in (caught.value.hint or "")
    _refused(path, "newer", tmp_path)


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.rbx"
    path.write_bytes(b"just some text\n" * 100)
    _refused(path, "truncated or corrupt", tmp_path)
    other = _write(tmp_path / "plain.rbx", [_file("a", b"a")], manifest_of=[], version=None)
    _refused(other, "does not start with rbx-format", tmp_path)


def test_a_non_empty_destination_is_refused(packed_bundle: Bundle, engine: FakeEngine,
                                            tmp_path: Path) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    loader = FakeEngine()
    with pytest.raises(ArchiveError, match="not empty"):
        archive.unpack(out, dest, loader)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"] and loader.loads == []


# ---------------------------------------------------------------------------- signatures


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    pairs = []
    for name in ("mine", "other"):
        key = tmp_path / "keys" / name
        key.parent.mkdir(exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(key)], check=True, capture_output=True)
        pairs.append(key)
    return pairs[0], pairs[1]


def test_a_signed_archive_verifies_with_its_key(packed_bundle: Bundle, engine: FakeEngine,
                                                tmp_path: Path, keys: tuple[Path, Path]) -> None:
    mine, _ = keys
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx", key=mine)
    assert _names(out)[-1] == "MANIFEST.sha256.sig"
    verified = archive.verify(out, mine.with_suffix(".pub"))
    assert verified.signed and verified.signature_checked
    assert archive.verify(out).signed and not archive.verify(out).signature_checked


def test_a_wrong_key_is_refused(packed_bundle: Bundle, engine: FakeEngine, tmp_path: Path,
                                keys: tuple[Path, Path]) -> None:
    mine, other = keys
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx", key=mine)
    _refused(out, "exp.rbx", tmp_path, key=other.with_suffix(".pub"))


def test_a_missing_signature_is_refused_when_required(packed_bundle: Bundle, engine: FakeEngine,
                                                      tmp_path: Path,
                                                      keys: tuple[Path, Path]) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    _refused(out, "not signed", tmp_path, key=keys[0].with_suffix(".pub"))


# ---------------------------------------------------------------------------- the command line


def test_cli_verify_prints_one_line_and_exits_5_on_damage(
    packed_bundle: Bundle, engine: FakeEngine, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    assert cli.main(["verify", str(out)]) == 0
    assert "OK, format 1" in capsys.readouterr().out
    out.write_bytes(out.read_bytes()[:-100])
    assert cli.main(["verify", str(out)]) == 5
    error = capsys.readouterr().err
    assert error.startswith("error:") and "truncated or corrupt" in error


# ---------------------------------------------------------------------------- crafting archives

Member = tuple[tarfile.TarInfo, bytes]


def _file(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _format_header(version: int = 1) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        line = f"reprobox-archive {version}\n".encode()
        info, data = _file("rbx-format", line)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()[: 2 * tarfile.BLOCKSIZE]  # header, data, no end marker


def _write(path: Path, members: Sequence[Member], manifest_of: Sequence[Member] | None,
           version: int | None = 1) -> Path:
    """A zstd tar with a format line, `members`, and a manifest listing `manifest_of`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        listed = []
        if version is not None:
            line = f"reprobox-archive {version}\n".encode()
            members = [_file("rbx-format", line), *members]
            listed.append(f"{hashlib.sha256(line).hexdigest()}  rbx-format\n")
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        if manifest_of is not None:
            listed += [f"{hashlib.sha256(d).hexdigest()}  {i.name}\n" for i, d in manifest_of]
            info, data = _file("MANIFEST.sha256", "".join(listed).encode())
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    return path


def test_the_wheels_the_lock_pins_travel_and_seed_the_cache_where_unpacked(
        packed_bundle: Bundle, engine: FakeEngine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = b"a wheel"
    here = tmp_path / "cache-here" / "reprobox" / "wheels"
    here.mkdir(parents=True)
    (here / "foo-1.0-py3-none-any.whl").write_bytes(wheel)
    (here / "other-2.0-py3-none-any.whl").write_bytes(b"not in the lock")
    digest = hashlib.sha256(wheel).hexdigest()
    (packed_bundle.path / "requirements.lock").write_text(
        f"foo==1.0 \\\n    --hash=sha256:{digest}\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-here"))
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    assert [n for n in _names(out) if n.startswith("wheels/")] == [
        "wheels/foo-1.0-py3-none-any.whl"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-there"))
    archive.unpack(out, tmp_path / "there", FakeEngine(saved={BUILT.tag: IMAGE}))
    seeded = tmp_path / "cache-there" / "reprobox" / "wheels" / "foo-1.0-py3-none-any.whl"
    assert seeded.read_bytes() == wheel


def test_declared_inputs_travel_and_a_replay_finds_them_beside_the_unpacked_bundle(
        packed_bundle: Bundle, engine: FakeEngine, tmp_path: Path) -> None:
    from dataclasses import replace

    from reprobox import manifest as manifest_io
    from reprobox import replay
    from reprobox.manifest import FileRecord

    data = tmp_path / "proj" / "data" / "train.csv"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"x,y\n1,2\n")
    data.chmod(0o644)
    record = FileRecord("data/train.csv", hashlib.sha256(data.read_bytes()).hexdigest(), 8)
    manifest = packed_bundle.manifest()
    manifest_io.write(replace(manifest, inputs=(record,)), packed_bundle.manifest_path)
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    assert "inputs/data/train.csv" in _names(out)
    dest = tmp_path / "there"
    archive.unpack(out, dest, FakeEngine(saved={BUILT.tag: IMAGE}))
    unpacked = Bundle(archive.find_bundle(dest))
    (mount,) = replay.input_mounts(unpacked, unpacked.manifest())
    assert mount.source == str(dest / "inputs" / "data" / "train.csv") and mount.read_only


def test_an_input_changed_since_capture_is_not_packed(
        packed_bundle: Bundle, engine: FakeEngine, tmp_path: Path) -> None:
    from dataclasses import replace

    from reprobox import manifest as manifest_io
    from reprobox.manifest import FileRecord

    (tmp_path / "proj" / "data.csv").write_bytes(b"changed")
    record = FileRecord("data.csv", "0" * 64, 7)
    manifest_io.write(replace(packed_bundle.manifest(), inputs=(record,)),
                      packed_bundle.manifest_path)
    with pytest.raises(ArchiveError, match="data.csv is missing or changed since capture"):
        _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    assert list(tmp_path.glob("*.rbx*")) == []


# ---------------------------------------------------------------------------- found in review


@pytest.mark.parametrize("tail", [
    b"garbage after the stream",
    zstandard.ZstdCompressor().compress(b"a second frame of data"),
])
def test_anything_after_the_archive_is_refused(packed_bundle: Bundle, engine: FakeEngine,
                                               tmp_path: Path, tail: bytes) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    out.write_bytes(out.read_bytes() + tail)
    _refused(out, "exp.rbx: (has data after the end|truncated or corrupt)", tmp_path)


def test_a_flipped_byte_in_the_frame_checksum_is_refused(packed_bundle: Bundle,
                                                        engine: FakeEngine,
                                                        tmp_path: Path) -> None:
    out = _pack(packed_bundle, engine, tmp_path / "exp.rbx")
    data = bytearray(out.read_bytes())
    data[-1] ^= 0x01  # the zstd frame's checksum covers the tar's end padding too
    out.write_bytes(bytes(data))
    _refused(out, "exp.rbx: truncated or corrupt", tmp_path)


def test_a_folder_member_after_the_manifest_is_refused(tmp_path: Path) -> None:
    payload = _file("bundle/manifest.yaml", b"x")
    folder = tarfile.TarInfo("wheels/x.whl")
    folder.type = tarfile.DIRTYPE
    path = tmp_path / "exp.rbx"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        line = b"reprobox-archive 1\n"
        listed = (f"{hashlib.sha256(line).hexdigest()}  rbx-format\n"
                  f"{hashlib.sha256(b'x').hexdigest()}  bundle/manifest.yaml\n").encode()
        for info, data in (_file("rbx-format", line), payload,
                           _file("MANIFEST.sha256", listed)):
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(folder)
    path.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    _refused(path, "has a member after MANIFEST.sha256: wheels/x.whl", tmp_path)
