"""Record the project's git state: commit, branch, origin, dirty flag and the uncommitted diff."""

from __future__ import annotations

import re
from pathlib import Path

from reprobox.capture.environ import redact_text, strip_url_credentials
from reprobox.capture.runner import Runner, RunOutput
from reprobox.errors import ProbeUnavailable
from reprobox.fileio import sha256_bytes
from reprobox.manifest import Git

DIFF_FILE = "git.diff"
# `<transport>::<address>` runs git-remote-<transport>; the address is an ordinary URL.
_REMOTE_HELPER = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*::)(.+)$", re.DOTALL)
# `user:pass@` whose password holds a "/" (not URL-encoded): a URL parser sees no userinfo.
_SLASHED_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@:\s]+:[^@\s]*@")
_SSH_USER = re.compile(r"^([A-Za-z0-9+.-]*ssh[A-Za-z0-9+.-]*://[^/@:\s]+@)(.*)$",
                       re.IGNORECASE | re.DOTALL)
# Never let user config turn the diff into something else (external tools, colour, textconv).
_DIFF = ("diff", "HEAD", "--binary", "--no-ext-diff", "--no-color", "--no-textconv")


def project_root(cwd: Path, runner: Runner) -> Path:
    """The top of the git work tree holding `cwd`, or `cwd` itself outside git."""
    try:
        result = _git(runner, cwd, "rev-parse", "--show-toplevel")
    except ProbeUnavailable:
        return cwd
    top = result.stdout.strip()
    return Path(top) if result.returncode == 0 and top else cwd


def probe(project: Path, runner: Runner) -> tuple[Git, str]:
    """The Git record of `project` and its redacted diff against HEAD ("" when clean)."""
    commit = _head(project, runner)
    diff = redact_text(_checked(project, runner, *_DIFF).stdout)
    record = Git(
        commit=commit,
        branch=_branch(project, runner),
        remote=_remote(project, runner),
        dirty=bool(_checked(project, runner, "status", "--porcelain", "-z").stdout),
        diff_file=DIFF_FILE if diff else None,
        diff_sha256=sha256_bytes(diff.encode()) if diff else None,
    )
    return record, diff


def _head(project: Path, runner: Runner) -> str:
    try:
        inside = _git(runner, project, "rev-parse", "--is-inside-work-tree")
    except ProbeUnavailable as exc:
        raise ProbeUnavailable(f"not a git repository: {project} ({exc})") from None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise ProbeUnavailable(f"not a git repository: {project} ({_why(inside)})")
    head = _git(runner, project, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if head.returncode != 0:
        raise ProbeUnavailable(f"not a git repository: {project} has no commits yet")
    return head.stdout.strip()


def _branch(project: Path, runner: Runner) -> str | None:
    result = _git(runner, project, "symbolic-ref", "--quiet", "--short", "HEAD")
    if result.returncode != 0:
        return None  # detached HEAD
    return result.stdout.strip() or None


def _remote(project: Path, runner: Runner) -> str | None:
    """origin's URL, else the first remote's, with any credentials removed."""
    names = _checked(project, runner, "remote").stdout.split()
    if not names:
        return None
    name = "origin" if "origin" in names else names[0]
    result = _git(runner, project, "remote", "get-url", name)
    url = result.stdout.strip()
    return clean_remote_url(url) if result.returncode == 0 and url else None


def clean_remote_url(url: str) -> str:
    """`url` without credentials, also behind a remote helper (`hg::https://u:pw@h/r`)."""
    helper = _REMOTE_HELPER.match(url)
    prefix, address = helper.groups() if helper else ("", url)
    address = _SLASHED_USERINFO.sub(r"\1", strip_url_credentials(address))
    # strip_url_credentials kept only a plain ssh user name; redact_text would mask it too
    ssh_user = _SSH_USER.match(address)
    kept, rest = ssh_user.groups() if ssh_user else ("", address)
    return redact_text(prefix) + kept + redact_text(rest)


def _checked(project: Path, runner: Runner, *args: str) -> RunOutput:
    result = _git(runner, project, *args)
    if result.returncode != 0:
        raise ProbeUnavailable(f"git {args[0]} failed in {project} ({_why(result)})")
    return result


def _git(runner: Runner, project: Path, *args: str) -> RunOutput:
    return runner(["git", "-c", "core.quotepath=off", *args], cwd=project, timeout=60)


def _why(result: RunOutput) -> str:
    # git error text can quote a remote URL, token included: redact what ends up in notes.
    lines = result.stderr.strip().splitlines()
    return redact_text(lines[0]) if lines else f"exit code {result.returncode}"
