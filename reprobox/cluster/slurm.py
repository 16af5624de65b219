"""The one module that runs Slurm's commands: sbatch, squeue, scontrol, scancel.

Every call goes through a `Runner` (reprobox.capture.runner), so the unit tier can script
Slurm's answers; the Slurm tier of the tests runs them against a real single-node cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reprobox.capture.runner import Runner, RunOutput, subprocess_runner
from reprobox.errors import ClusterError, ProbeUnavailable

ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                           "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT"})
_JOB_ID = re.compile(r"\d+")
_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class TaskState:
    """One task of a job as Slurm sees it: `state` like PENDING, RUNNING, TIMEOUT."""

    task: int
    state: str
    reason: str = ""


class Slurm:
    """Slurm's client commands, through `runner`."""

    def __init__(self, runner: Runner = subprocess_runner) -> None:
        self._runner = runner

    def submit(self, script: Path) -> str:
        """Submit a batch script; returns the job id."""
        answer = self._call(["sbatch", "--parsable", str(script)], "submit the replay job")
        job_id = answer.stdout.strip().split(";")[0]
        if not _JOB_ID.fullmatch(job_id):
            raise ClusterError(f"sbatch answered {answer.stdout.strip()[:80]!r}, not a job id",
                               hint="check `sbatch --version` and the submission by hand")
        return job_id

    def queued(self, job_id: str) -> dict[int, TaskState]:
        """The job's tasks still in the queue (pending or running), by task; {} when done."""
        answer = self._call(["squeue", "--noheader", "--array", "--jobs", job_id,
                             "--format=%K|%T|%r"], "follow the replay job", job_missing_ok=True)
        return _task_states(answer.stdout)

    def final_states(self, job_id: str) -> dict[int, TaskState]:
        """How the job's tasks ended, as long as slurmctld remembers (MinJobAge)."""
        try:
            answer = self._call(["scontrol", "--oneliner", "show", "job", job_id],
                                "ask how the replay job ended", job_missing_ok=True)
        except ClusterError:
            return {}
        return _scontrol_states(answer.stdout)

    def cancel(self, job_id: str) -> None:
        """Cancel the job (every task); a job already gone is no error."""
        self._call(["scancel", job_id], "cancel the replay job", job_missing_ok=True)

    def _call(self, argv: list[str], purpose: str, job_missing_ok: bool = False) -> RunOutput:
        try:
            answer = self._runner(argv, timeout=_TIMEOUT_S)
        except ProbeUnavailable as exc:
            raise ClusterError(f"cannot {purpose}: {exc}",
                               hint="--on slurm needs Slurm's client commands (sbatch, squeue, "
                               "scontrol, scancel) on PATH and a reachable slurmctld") from None
        if answer.returncode != 0 and not (job_missing_ok and _job_gone(answer.stderr)):
            said = _last_line(answer.stderr) or f"exit code {answer.returncode}"
            raise ClusterError(f"{argv[0]} could not {purpose}: {said}",
                               hint=_hint(said))
        return answer


def _task_states(text: str) -> dict[int, TaskState]:
    states = {}
    for line in text.splitlines():
        task, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if state:
            index = int(task) if task.isdigit() else 0  # "N/A": not an array
            states[index] = TaskState(index, state, "" if reason == "None" else reason)
    return states


def _scontrol_states(text: str) -> dict[int, TaskState]:
    states = {}
    for line in text.splitlines():
        fields = _fields(line)
        if "JobState" in fields:
            reason = "" if fields.get("Reason") == "None" else fields.get("Reason", "")
            for index in _task_ids(fields.get("ArrayTaskId", "0")):
                states[index] = TaskState(index, fields["JobState"], reason)
    return states


def _task_ids(text: str) -> list[int]:
    """Slurm's task list: "3", or tasks that never started, kept as one record: "2-5,7:2"."""
    ids: list[int] = []
    for part in text.split(","):
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        if first.isdigit() and (not last or last.isdigit()) and (not step or step.isdigit()):
            ids.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return ids


def _fields(line: str) -> Mapping[str, str]:
    """`Key=Value Key=Value` as scontrol prints them (values here have no spaces)."""
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def _job_gone(stderr: str) -> bool:
    return "Invalid job id" in stderr


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _hint(said: str) -> str:
    lowered = said.lower()
    if "partition" in lowered:
        return "`sinfo --summarize` lists the partitions; pass one with --partition"
    if "gres" in lowered or "gpu" in lowered:
        return "ask for GPUs the partition has (`sinfo -o '%P %G'`), or replay with --cpu"
    if "time limit" in lowered:
        return "ask for less --time than the partition's limit (`sinfo -o '%P %l'`)"
    return "run the same command by hand to see Slurm's whole answer"
