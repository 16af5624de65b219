"""SSH signatures through the real ssh-keygen, with keys made for each test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reprobox import signing
from reprobox.errors import ReproboxError

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH")
DATA = b"checksums of every member\n" * 100


def _key(folder: Path, name: str, passphrase: str = "") -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test",
                    "-f", str(key)], check=True)
    return key


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return _key(tmp_path, "key")


def test_a_good_signature_verifies(key: Path) -> None:
    signature = signing.sign(DATA, key)
    assert signature.startswith(signing.SIGNATURE_HEADER)
    signing.verify(DATA, signature, key.with_suffix(".pub"))


def test_the_signature_is_ssh_keygens_own_format(key: Path, tmp_path: Path) -> None:
    # Anyone with OpenSSH can check it without reprobox.
    (tmp_path / "sig").write_bytes(signing.sign(DATA, key))
    public = key.with_suffix(".pub").read_text().split()
    (tmp_path / "allowed").write_text(f"someone {public[0]} {public[1]}\n")
    subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I",
                    "someone", "-n", "reprobox", "-s", str(tmp_path / "sig")],
                   input=DATA, check=True, capture_output=True)


def test_a_flipped_byte_in_the_data_fails(key: Path) -> None:
    signature = signing.sign(DATA, key)
    tampered = bytearray(DATA)
    tampered[7] ^= 0x01
    with pytest.raises(ReproboxError, match="bad signature") as caught:
        signing.verify(bytes(tampered), signature, key.with_suffix(".pub"))
    assert caught.value.hint and "do not trust" in caught.value.hint


def test_another_key_fails(key: Path, tmp_path: Path) -> None:
    other = _key(tmp_path, "other")
    with pytest.raises(ReproboxError, match="bad signature"):
        signing.verify(DATA, signing.sign(DATA, key), other.with_suffix(".pub"))


def test_a_garbage_signature_fails(key: Path) -> None:
    with pytest.raises(ReproboxError, match="not an SSH signature"):
        signing.verify(DATA, b"garbage\n", key.with_suffix(".pub"))


def test_a_corrupted_armored_signature_fails(key: Path) -> None:
    lines = signing.sign(DATA, key).splitlines(keepends=True)
    lines[2] = lines[2][::-1]  # scramble the base64 body, keep the armor
    with pytest.raises(ReproboxError, match="bad signature"):
        signing.verify(DATA, b"".join(lines), key.with_suffix(".pub"))


def test_a_signature_for_another_namespace_fails(key: Path, tmp_path: Path) -> None:
    message = tmp_path / "message"
    message.write_bytes(DATA)
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "git", str(message)],
                   check=True, capture_output=True)
    signature = (tmp_path / "message.sig").read_bytes()
    with pytest.raises(ReproboxError, match="bad signature"):
        signing.verify(DATA, signature, key.with_suffix(".pub"))


def test_a_private_key_is_not_a_public_key(key: Path) -> None:
    with pytest.raises(ReproboxError, match="not an OpenSSH public key") as caught:
        signing.verify(DATA, signing.sign(DATA, key), key)
    assert caught.value.hint and ".pub" in caught.value.hint


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReproboxError, match="no such private key"):
        signing.sign(DATA, tmp_path / "nope")
    with pytest.raises(ReproboxError, match="no such public key"):
        signing.verify(DATA, b"x", tmp_path / "nope.pub")


def test_a_passphrase_protected_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    key = _key(tmp_path, "locked", passphrase="correct horse")
    with pytest.raises(ReproboxError, match="passphrase") as caught:
        signing.sign(DATA, key)
    assert caught.value.hint and "ssh-agent" in caught.value.hint


def test_a_private_key_others_can_read_is_refused(key: Path) -> None:
    key.chmod(0o644)
    with pytest.raises(ReproboxError, match="others can read") as caught:
        signing.sign(DATA, key)
    assert caught.value.hint == f"chmod 600 {key}"


def test_missing_ssh_keygen_is_named(key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(key.parent))
    with pytest.raises(ReproboxError, match="ssh-keygen not found") as caught:
        signing.sign(DATA, key)
    assert caught.value.hint and "OpenSSH" in caught.value.hint
