"""slurm: sbatch, squeue, scontrol and scancel through a runner scripted with Slurm's answers.

The answers are in the formats Slurm 22-23 prints (`--parsable`, `--format=%K|%T|%r`,
`scontrol --oneliner`); the Slurm tier (tests/integration/test_slurm.py) runs the real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reprobox.capture.runner import RunOutput
from reprobox.cluster.slurm import Slurm, TaskState
from reprobox.errors import ClusterError, ProbeUnavailable

INVALID_JOB = "slurm_load_jobs error: Invalid job id specified\n"
SCRIPT = Path("/shared/jobs/x/job.sh")


@dataclass
class ScriptedRunner:
    """Answers each command by its program name; records every argv it was given."""

    answers: dict[str, RunOutput | Exception] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], cwd: Path | None = None,
                 timeout: float = 30) -> RunOutput:
        self.calls.append(list(argv))
        answer = self.answers[argv[0]]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _slurm(program: str, answer: RunOutput | Exception) -> tuple[Slurm, ScriptedRunner]:
    runner = ScriptedRunner({program: answer})
    return Slurm(runner), runner


def _ok(stdout: str) -> RunOutput:
    return RunOutput(0, stdout, "")


# --- sbatch --------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["123\n", "123;cluster-a\n", "  123  \n"])
def test_submit_reads_the_job_id_of_a_parsable_answer(answer: str) -> None:
    slurm, runner = _slurm("sbatch", _ok(answer))
    assert slurm.submit(SCRIPT) == "123"
    assert runner.calls == [["sbatch", "--parsable", str(SCRIPT)]]


@pytest.mark.parametrize("answer", ["Submitted batch job 123\n", "", "abc;cluster\n", "12a\n"])
def test_submit_refuses_an_answer_that_is_not_a_job_id(answer: str) -> None:
    slurm, _ = _slurm("sbatch", _ok(answer))
    with pytest.raises(ClusterError, match="not a job id") as err:
        slurm.submit(SCRIPT)
    assert err.value.exit_code == 6 and "sbatch --version" in (err.value.hint or "")


def test_a_missing_sbatch_is_a_cluster_error_with_a_hint() -> None:
    slurm, _ = _slurm("sbatch", ProbeUnavailable("sbatch: command not found"))
    with pytest.raises(ClusterError, match="cannot submit the replay job: sbatch: command not "
                       "found") as err:
        slurm.submit(SCRIPT)
    assert err.value.exit_code == 6
    assert "sbatch, squeue" in (err.value.hint or "") and "PATH" in (err.value.hint or "")


def test_an_unknown_partition_points_at_sinfo() -> None:
    refused = RunOutput(1, "", "sbatch: error: Batch job submission failed: Invalid partition "
                        "name specified\n")
    slurm, _ = _slurm("sbatch", refused)
    with pytest.raises(ClusterError, match="sbatch could not submit the replay job: .*Invalid "
                       "partition name specified") as err:
        slurm.submit(SCRIPT)
    assert "sinfo" in (err.value.hint or "") and "--partition" in (err.value.hint or "")


@pytest.mark.parametrize(("said", "hinted"), [
    ("sbatch: error: Batch job submission failed: Invalid generic resource (gres) "
     "specification", "--cpu"),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or "
     "exceeds some limit)", "--time"),
    ("sbatch: error: Batch job submission failed: Access/permission denied", "by hand"),
])
def test_other_refusals_get_their_own_hint(said: str, hinted: str) -> None:
    slurm, _ = _slurm("sbatch", RunOutput(1, "", f"{said}\n"))
    with pytest.raises(ClusterError) as err:
        slurm.submit(SCRIPT)
    assert hinted in (err.value.hint or "")


def test_a_refusal_without_words_names_the_exit_code() -> None:
    slurm, _ = _slurm("sbatch", RunOutput(255, "", ""))
    with pytest.raises(ClusterError, match="sbatch could not submit the replay job: exit code 255"):
        slurm.submit(SCRIPT)


# --- squeue --------------------------------------------------------------------------------------


def test_queued_reads_an_array_one_task_a_line() -> None:
    listing = "0|RUNNING|None\n1|PENDING|Resources\n2|PENDING|Priority\n"
    slurm, runner = _slurm("squeue", _ok(listing))
    assert slurm.queued("77") == {
        0: TaskState(0, "RUNNING", ""),
        1: TaskState(1, "PENDING", "Resources"),
        2: TaskState(2, "PENDING", "Priority"),
    }
    assert runner.calls == [["squeue", "--noheader", "--array", "--jobs", "77",
                             "--format=%K|%T|%r"]]


def test_a_job_that_is_no_array_is_task_zero() -> None:
    slurm, _ = _slurm("squeue", _ok("N/A|PENDING|BeginTime\n"))
    assert slurm.queued("5") == {0: TaskState(0, "PENDING", "BeginTime")}


def test_an_empty_queue_is_an_empty_mapping() -> None:
    slurm, _ = _slurm("squeue", _ok("\n"))
    assert slurm.queued("5") == {}


def test_a_job_slurm_forgot_has_left_the_queue() -> None:
    slurm, _ = _slurm("squeue", RunOutput(1, "", INVALID_JOB))
    assert slurm.queued("5") == {}


def test_squeue_failing_otherwise_is_an_error() -> None:
    down = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    slurm, _ = _slurm("squeue", RunOutput(1, "", down))
    with pytest.raises(ClusterError, match="squeue could not follow the replay job: .*connect "
                       "failure"):
        slurm.queued("5")


# --- scontrol ------------------------------------------------------------------------------------


ARRAY_ENDED = (
    "JobId=9 ArrayJobId=9 ArrayTaskId=1 JobName=reprobox-r1 UserId=me(1000) GroupId=me(1000) "
    "Priority=1 Nice=0 Account=(null) QOS=normal JobState=TIMEOUT Reason=TimeLimit "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 ExitCode=0:15 RunTime=00:01:00 "
    "TimeLimit=00:01:00 Partition=debug NodeList=node1 WorkDir=/shared/jobs/x\n"
    "JobId=10 ArrayJobId=9 ArrayTaskId=0 JobName=reprobox-r1 UserId=me(1000) GroupId=me(1000) "
    "Priority=1 Nice=0 Account=(null) QOS=normal JobState=COMPLETED Reason=None "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 ExitCode=0:0 RunTime=00:00:12 "
    "TimeLimit=00:01:00 Partition=debug NodeList=node1 WorkDir=/shared/jobs/x\n"
)


def test_final_states_reads_every_task_of_an_array() -> None:
    slurm, runner = _slurm("scontrol", _ok(ARRAY_ENDED))
    ended = slurm.final_states("9")
    assert sorted(ended) == [0, 1]
    assert (ended[0].task, ended[0].state) == (0, "COMPLETED")
    assert ended[1] == TaskState(1, "TIMEOUT", "TimeLimit")
    assert runner.calls == [["scontrol", "--oneliner", "show", "job", "9"]]


def test_a_range_of_tasks_that_never_started_is_not_task_zero() -> None:
    # An array cancelled before tasks 2-3 started: slurmctld keeps them as one record.
    cancelled = ("JobId=11 ArrayJobId=9 ArrayTaskId=0 JobName=reprobox-r1 JobState=COMPLETED "
                 "Reason=None ExitCode=0:0\n"
                 "JobId=9 ArrayJobId=9 ArrayTaskId=2-3 JobName=reprobox-r1 JobState=CANCELLED "
                 "Reason=None ExitCode=0:0\n")
    slurm, _ = _slurm("scontrol", _ok(cancelled))
    ended = {task: state.state for task, state in slurm.final_states("9").items()}
    assert ended == {0: "COMPLETED", 2: "CANCELLED", 3: "CANCELLED"}


def test_final_states_of_a_single_job_are_task_zero() -> None:
    single = ("JobId=4 JobName=reprobox-r1 UserId=me(1000) JobState=FAILED Reason=NonZeroExitCode "
              "ExitCode=1:0 Partition=debug\n")
    slurm, _ = _slurm("scontrol", _ok(single))
    assert slurm.final_states("4") == {0: TaskState(0, "FAILED", "NonZeroExitCode")}


@pytest.mark.parametrize("answer", [
    RunOutput(1, "", INVALID_JOB),  # slurmctld forgot it (MinJobAge)
    RunOutput(1, "", "slurm_load_jobs error: Unable to contact slurm controller\n"),
    ProbeUnavailable("scontrol: command not found"),
])
def test_final_states_are_unknown_rather_than_an_error(answer: RunOutput | Exception) -> None:
    slurm, _ = _slurm("scontrol", answer)
    assert slurm.final_states("4") == {}


# --- scancel -------------------------------------------------------------------------------------


def test_cancel_asks_scancel() -> None:
    slurm, runner = _slurm("scancel", _ok(""))
    slurm.cancel("12")
    assert runner.calls == [["scancel", "12"]]


def test_cancelling_a_job_already_gone_is_no_error() -> None:
    slurm, _ = _slurm("scancel", RunOutput(1, "", "scancel: error: Kill job error on job id 12: "
                                          "Invalid job id specified\n"))
    slurm.cancel("12")


def test_cancel_refused_otherwise_is_an_error() -> None:
    denied = "scancel: error: Kill job error on job id 12: Access/permission denied\n"
    slurm, _ = _slurm("scancel", RunOutput(1, "", denied))
    with pytest.raises(ClusterError, match="scancel could not cancel the replay job: .*permission"):
        slurm.cancel("12")


def test_every_command_gets_a_timeout() -> None:
    timeouts: list[float] = []

    def runner(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
        timeouts.append(timeout)
        return _ok("1\n")

    Slurm(runner).submit(SCRIPT)
    assert timeouts and timeouts[0] > 0
