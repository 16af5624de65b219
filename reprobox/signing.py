"""Sign bytes and check signatures with SSH keys, through `ssh-keygen -Y` (OpenSSH >= 8.0).

An SSH signature is a standard, widely available format (PROTOCOL.sshsig): anyone with OpenSSH
can check one without reprobox. The namespace `reprobox` binds a signature to this use, so a
signature made for git or for a file elsewhere is refused. Errors are `ReproboxError`s with a
hint; the archive layer maps them onto its own error class.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from reprobox.errors import ReproboxError

NAMESPACE = "reprobox"
PRINCIPAL = "reprobox"
SIGNATURE_HEADER = b"-----BEGIN SSH SIGNATURE-----"
_TIMEOUT_S = 60.0
_PUBLIC_KEY_TYPES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")


def sign(data: bytes, key: Path) -> bytes:
    """An armored SSH signature of `data` made with the private key file `key`."""
    _check_key_file(key, "private key")
    with tempfile.TemporaryDirectory(prefix="reprobox-sign-") as tmp:
        message = Path(tmp) / "message"
        message.write_bytes(data)
        result = _ssh_keygen(["-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(message)],
                             stdin=b"")
        signature = Path(tmp) / "message.sig"
        if result.returncode != 0 or not signature.is_file():
            raise _sign_error(key, result)
        return signature.read_bytes()


def verify(data: bytes, signature: bytes, public_key: Path) -> None:
    """Return when `signature` is a valid signature of `data` by `public_key`; raise otherwise."""
    key_line = _public_key_line(public_key)
    if not signature.lstrip().startswith(SIGNATURE_HEADER):
        raise ReproboxError(
            "the signature is not an SSH signature (no BEGIN SSH SIGNATURE armor)",
            hint="the archive's signature member is damaged or was replaced; do not trust it",
        )
    with tempfile.TemporaryDirectory(prefix="reprobox-verify-") as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_text(f'{PRINCIPAL} namespaces="{NAMESPACE}" {key_line}\n')
        sig_file = Path(tmp) / "signature"
        sig_file.write_bytes(signature)
        result = _ssh_keygen(["-Y", "verify", "-f", str(allowed), "-I", PRINCIPAL,
                              "-n", NAMESPACE, "-s", str(sig_file)], stdin=data)
    if result.returncode != 0:
        raise _verify_error(public_key, _stderr(result))


def _ssh_keygen(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    program = shutil.which("ssh-keygen")
    if program is None:
        raise ReproboxError(
            "ssh-keygen not found: signatures need OpenSSH 8.0 or newer",
            hint="install OpenSSH (apt-get install openssh-client, brew install openssh)",
        )
    try:
        # A session of its own has no terminal, so a passphrase prompt fails instead of waiting.
        return subprocess.run([program, *args], input=stdin, capture_output=True,
                              timeout=_TIMEOUT_S, check=False, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise ReproboxError(
            f"ssh-keygen {args[1]} did not finish in {_TIMEOUT_S:.0f} s",
            hint="is it waiting for a passphrase or a security key touch? use ssh-agent",
        ) from None


def _check_key_file(key: Path, what: str) -> None:
    if not key.is_file():
        raise ReproboxError(f"{key}: no such {what} file",
                            hint="name an SSH key file, e.g. ~/.ssh/id_ed25519")


def _public_key_line(public_key: Path) -> str:
    """The one `TYPE BASE64` line of an OpenSSH public key file, the comment dropped."""
    _check_key_file(public_key, "public key")
    try:
        text = public_key.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReproboxError(f"{public_key}: cannot read public key ({exc})") from None
    fields = text.split()
    if len(text.splitlines()) != 1 or len(fields) < 2 or not fields[0].startswith(
        _PUBLIC_KEY_TYPES
    ):
        raise ReproboxError(
            f"{public_key}: not an OpenSSH public key",
            hint="pass the .pub file (one line: ssh-ed25519 AAAA...), never the private key",
        )
    return f"{fields[0]} {fields[1]}"


def _sign_error(key: Path, result: subprocess.CompletedProcess[bytes]) -> ReproboxError:
    stderr, everything = _stderr(result), result.stderr.decode("utf-8", "replace").lower()
    if "passphrase" in everything:
        return ReproboxError(
            f"{key}: the key is protected by a passphrase ({stderr})",
            hint="add it to ssh-agent (ssh-add KEY) and pass its .pub file, "
            "or sign with an unencrypted key",
        )
    if "too open" in everything:
        return ReproboxError(f"{key}: ssh-keygen ignores a private key others can read",
                             hint=f"chmod 600 {key}")
    return ReproboxError(f"{key}: signing failed ({stderr})",
                         hint="pass an ed25519 or RSA private key file made by ssh-keygen")


def _verify_error(public_key: Path, stderr: str) -> ReproboxError:
    return ReproboxError(
        f"bad signature: not made by {public_key} over these bytes ({stderr})",
        hint="the archive was changed after signing, or signed with another key; do not trust it",
    )


def _stderr(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else f"exit code {result.returncode}"
