"""The exception tree of reprobox; every error a user can see is one of these.

```
ReproboxError                  base: .hint, .exit_code = 1
├── ManifestError              manifest missing, unparsable, unsafe, newer, or a field invalid
├── BundleError                no bundle where one was expected, or a bundle is incomplete
├── CaptureError               the command could not be run or a declared path is missing
├── RenderError                template or base-image data problem
├── WheelError                 a pinned package has no wheel and cannot be built
├── EngineError                the Docker daemon is unreachable or refused a request
│   ├── BaseImageError         no base image can be had (no registry, nothing local)
│   ├── BuildFailed            the image build failed (.log_tail)
│   └── BuildVerificationError the installed set in the image differs from the lock
├── ReplayError                the container could not run or timed out, or an input changed
│   └── PreflightError         this host cannot replay the run as captured (no GPU, old driver); 4
├── ArchiveError               an archive is corrupt, unsafe, newer, or badly signed; exit code 5
├── ClusterError               Slurm is missing, refused a job or lost it; exit code 6
├── UsageError                 arguments that parse but make no sense; exit code 2
└── Interrupted                Ctrl-C; exit code 130, nothing half-written left behind
ProbeUnavailable               NOT a ReproboxError: a probe could not answer; capture notes it
```

A run that completes but does not reproduce is a result (exit code 3), not an exception.
"""

from __future__ import annotations


class ReproboxError(Exception):
    """Base of every error reprobox reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ManifestError(ReproboxError):
    """A manifest is missing, unparsable, unsafe, from a newer reprobox, or has a bad field."""


class BundleError(ReproboxError):
    """No bundle where one was expected, or a bundle is missing a part."""


class CaptureError(ReproboxError):
    """The command could not be started, or a declared input or output is missing."""


class RenderError(ReproboxError):
    """The Dockerfile template or the base-image data could not be rendered."""


class WheelError(ReproboxError):
    """A pinned package has no wheel for the image and could not be built from source."""


class EngineError(ReproboxError):
    """The Docker daemon is unreachable or refused a request."""


class BaseImageError(EngineError):
    """No base image can be had: the registry does not answer and none is present locally."""


class BuildFailed(EngineError):
    """The image build failed; `log_tail` holds the last lines of its log."""

    def __init__(self, message: str, log_tail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.log_tail = log_tail


class BuildVerificationError(EngineError):
    """The packages installed in the built image differ from the lock."""


class ReplayError(ReproboxError):
    """The replay container could not run, timed out, or an input changed since capture."""


class PreflightError(ReplayError):
    """This host cannot replay the run as captured: no GPU where one was used, too old a driver."""

    exit_code = 4

    def __init__(self, message: str, hint: str | None = None, code: str = "preflight") -> None:
        super().__init__(message, hint)
        self.code = code  # "gpu-missing", "driver-too-old": what `reprobox doctor` calls it


class ArchiveError(ReproboxError):
    """An archive is truncated, tampered with, unsafe, from a newer reprobox, or badly signed."""

    exit_code = 5


class UsageError(ReproboxError):
    """The command line parsed but asks for something impossible (exit code 2, like argparse)."""

    exit_code = 2


class ClusterError(ReproboxError):
    """Slurm's commands are missing, it refused a job, or a job ended without a result."""

    exit_code = 6


class Interrupted(ReproboxError):
    """The user pressed Ctrl-C; whatever was in progress was rolled back."""

    exit_code = 130


class ProbeUnavailable(Exception):
    """A capture probe could not answer; capture records the reason as a note and goes on."""
