"""slurm_script: the batch script, read as text, checked by `bash -n`, and run by bash for real.

The runs use a fake `docker` (first on a PATH holding only the tools the script needs) that
logs its argv and does what the script relies on; what the flags mean is the Docker tier's
and the Slurm tier's to check.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reprobox import replay
from reprobox.build import BuiltImage
from reprobox.cluster.slurm_script import MAX_TASKS, JobFiles, SlurmOptions, batch_script
from reprobox.engine import ContainerSpec
from reprobox.errors import UsageError
from reprobox.manifest import Manifest

from .test_cluster_apptainer import FAKE_APPTAINER

_APPTAINER_EXIT = '    sys.exit(int(os.environ.get("FAKE_EXIT", "0")))'
assert FAKE_APPTAINER.count(_APPTAINER_EXIT) == 1
# The fake apptainer whose replay runs on (FAKE_SLEEP seconds) as a long training would.
SLEEPING_APPTAINER = FAKE_APPTAINER.replace(_APPTAINER_EXIT, (
    '    pathlib.Path(os.environ["FAKE_LOG"]).with_name("running").touch()\n'
    '    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))\n') + _APPTAINER_EXIT)

BUILT = BuiltImage("reprobox/numpy-sgd:0123", "base:1", "3.11.7", "3.11.7")
RUN_ID = "20260101T120000Z-a1b2c3"
SEEDS = (5, 6)
FETCH = ["out/weights.npy", ".reprobox-state"]
# What the script runs besides docker; printf, command, mapfile and trap are bash's own.
TOOLS = ("mkdir", "timeout", "dirname", "hostname", "date", "awk", "mv", "touch", "rm", "mktemp")

# docker as the script uses it: `run` is the environment probe, `start --attach` the replay
# (with FAKE_SLEEP, a replay that runs on until `kill` stops it, as dockerd would);
# `cp` of the shim's state folder leaves a state file naming the seed the container was given.
FAKE_DOCKER = """#!{python}
import json, os, pathlib, signal, sys, time
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["docker", *argv]) + "\\n")
state = pathlib.Path(os.environ["FAKE_LOG"]).with_name("containers")
state.mkdir(exist_ok=True)
def env_file(name):
    return (state / name).read_text()
if argv[:2] == ["image", "inspect"]:
    sys.exit(int(os.environ.get("FAKE_NO_IMAGE", "0")))
elif argv[0] == "load":
    sys.exit(0)
elif argv[0] == "create":
    (state / argv[argv.index("--name") + 1]).write_text(argv[argv.index("--env-file") + 1])
    print("f00dcafe")
elif argv[:2] == ["start", "--attach"]:
    sys.stdout.write(os.environ.get("FAKE_STDOUT", "hello"))
    sys.stdout.flush()
    if os.environ.get("FAKE_SLEEP"):
        (state / "running").write_text(str(os.getpid()))
        time.sleep(float(os.environ["FAKE_SLEEP"]))
    sys.exit(int(os.environ.get("FAKE_EXIT", "3")))
elif argv[0] == "kill":
    running = state / "running"
    if running.exists():
        try:
            os.kill(int(running.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass
elif argv[0] == "cp":
    name, _, source = argv[1].partition(":")
    target = pathlib.Path(argv[2])
    if source.endswith("/.reprobox-state"):
        seed = [line.split("=", 1)[1] for line in open(env_file(name)).read().splitlines()
                if line.startswith("REPROBOX_SEED=")][-1]
        target.mkdir(parents=True, exist_ok=True)
        (target / "state-1.json").write_text(json.dumps({{"seed": int(seed)}}))
    else:
        target.write_text("copied " + source)
elif argv[0] == "run":
    print("{{}}")
elif argv[0] == "wait":
    print("137")
"""


def fake_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds the fake docker and the few tools the script needs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    return {"PATH": str(bin_dir), "FAKE_LOG": str(tmp_path / "docker.jsonl"),
            "HOME": str(tmp_path)}


def docker_calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["FAKE_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_script(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(path)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def _spec(manifest: Manifest, timeout_s: float = 60.0,
          memory: str | None = None) -> ContainerSpec:
    return replay.container_spec(manifest, BUILT, (), timeout_s, memory)


def _files(tmp_path: Path, probe: bool = True) -> JobFiles:
    work = tmp_path / "work"
    return JobFiles(str(work), str(tmp_path / "images" / "i.tar"),
                    str(tmp_path / "images" / "i.sif"),
                    str(work / "probe") if probe else None, log_pattern=f"{work}/slurm-%A_%a.out")


def _script(manifest: Manifest, tmp_path: Path, seeds: tuple[int, ...] = SEEDS,
            options: SlurmOptions | None = None, probe: bool = True,
            spec: ContainerSpec | None = None) -> str:
    return batch_script(manifest, RUN_ID, spec or _spec(manifest), seeds,
                        options or SlurmOptions(), _files(tmp_path, probe), FETCH)


def _sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def _write(tmp_path: Path, text: str) -> Path:
    """The script, and its job's folder made, as reprobox makes it before submitting."""
    path = tmp_path / "job.sh"
    path.write_text(text)
    (tmp_path / "work").mkdir(exist_ok=True)
    return path


def _bash_n(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("time", ["90", "01:30", "01:30:00", "1-12", "1-12:00", "2-00:00:00"])
def test_slurm_time_formats_are_accepted(time: str) -> None:
    assert SlurmOptions(time=time).time == time


@pytest.mark.parametrize("time", ["", "1h", "01:3", "1:30:00:00", "-5", "90 ", "1-", "12;id"])
def test_other_times_are_refused(time: str) -> None:
    with pytest.raises(UsageError, match="is not a Slurm time limit") as err:
        SlurmOptions(time=time)
    assert err.value.exit_code == 2 and "01:30:00" in (err.value.hint or "")


@pytest.mark.parametrize("partition", ["debug", "gpu-a100", "p_1.long"])
def test_partition_names_are_accepted(partition: str) -> None:
    assert SlurmOptions(partition=partition).partition == partition


@pytest.mark.parametrize("partition", ["", "-gpu", "a b", "gpu\n#SBATCH --x", "a;b", "$(id)"])
def test_odd_partition_names_are_refused(partition: str) -> None:
    with pytest.raises(UsageError, match="is not a Slurm partition name") as err:
        SlurmOptions(partition=partition)
    assert "sinfo" in (err.value.hint or "")


def test_engines_are_auto_docker_or_apptainer() -> None:
    for engine in ("auto", "docker", "apptainer"):
        assert SlurmOptions(engine=engine).engine == engine
    with pytest.raises(UsageError, match="'podman' is not one of auto, docker, apptainer"):
        SlurmOptions(engine="podman")


# --- the script as text --------------------------------------------------------------------------


def test_the_script_is_valid_bash(tmp_path: Path, sample_manifest: Manifest) -> None:
    for probe in (True, False):
        path = _write(tmp_path, _script(sample_manifest, tmp_path, probe=probe))
        checked = _bash_n(path)
        assert checked.returncode == 0, checked.stderr


def test_sbatch_asks_only_for_what_was_asked(tmp_path: Path, sample_manifest: Manifest) -> None:
    plain = _sbatch_lines(_script(sample_manifest, tmp_path, seeds=(5,)))
    assert plain == [
        f"#SBATCH --job-name=reprobox-{RUN_ID}",
        f"#SBATCH --output={tmp_path}/work/slurm-%A_%a.out",
        "#SBATCH --nodes=1", "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=1"]
    options = SlurmOptions(partition="gpu", gpus=2, time="01:00:00", cpus=4)
    asked = _sbatch_lines(_script(sample_manifest, tmp_path, seeds=(5, 6, 7), options=options,
                                  spec=_spec(sample_manifest, memory="8g")))
    assert asked[4:] == ["#SBATCH --cpus-per-task=4", "#SBATCH --partition=gpu",
                         "#SBATCH --gpus=2", "#SBATCH --time=01:00:00", "#SBATCH --mem=8192M",
                         "#SBATCH --array=0-2"]


@pytest.mark.parametrize(("memory", "mem"), [
    ("512m", "512M"), ("1.5g", "1536M"), ("2G", "2048M"), ("1048576", "1M"),
    ("1048577", "2M"), ("100k", "1M"), ("1025k", "2M"), ("1b", "1M")])
def test_a_memory_limit_is_asked_of_slurm_in_whole_mib_rounded_up(
        tmp_path: Path, sample_manifest: Manifest, memory: str, mem: str) -> None:
    # Slurm holds the job to --mem: rounded down, a replay Docker would let run could be
    # killed by Slurm; an Apptainer replay has no other limit at all.
    text = _script(sample_manifest, tmp_path, spec=_spec(sample_manifest, memory=memory))
    assert [line for line in _sbatch_lines(text) if "--mem" in line] == [f"#SBATCH --mem={mem}"]


@pytest.mark.parametrize("memory", ["lots", "8x", "-1g", "0", "1.4999g", ""])
def test_a_memory_limit_docker_would_not_read_is_refused(
        tmp_path: Path, sample_manifest: Manifest, memory: str) -> None:
    with pytest.raises(UsageError, match=f"memory limit {memory!r}"):
        _script(sample_manifest, tmp_path, spec=_spec(sample_manifest, memory=memory))


def test_the_replay_is_stopped_soon_after_its_timeout(tmp_path: Path,
                                                      sample_manifest: Manifest) -> None:
    # Slurm gives a task KillWait (30 s by default) between SIGTERM and SIGKILL: the replay's
    # own kill must come well inside it, under Docker and under Apptainer alike.
    text = _script(sample_manifest, tmp_path, spec=_spec(sample_manifest, timeout_s=90))
    assert text.count("timeout --kill-after=10 90s ") == 2
    assert "--kill-after=30" not in text


def test_a_multi_line_command_stays_in_the_header_comment(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    # BUG: the header pastes the command as it is. A line break in it (`python -c` with a
    # program) ends the comment: sbatch stops reading #SBATCH at the first line that is not
    # a comment, so the job's partition, time and array are lost, and the line after the
    # break becomes shell code.
    argv = ("python", "-c", "import os\ntouch_me = 1")
    manifest = replace(sample_manifest, run=replace(sample_manifest.run, argv=argv))
    lines = _script(manifest, tmp_path, options=SlurmOptions(partition="gpu")).splitlines()
    last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(line.startswith("#") for line in lines[:last_sbatch])
    (shown,) = [line for line in lines if line.startswith("#   command: ")]
    assert "import os" in shown and "touch_me = 1" in shown  # one comment line, all of it


def test_a_log_path_with_a_space_stays_one_sbatch_argument(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    # BUG: sbatch reads #SBATCH arguments as a shell would (quotes group, whitespace splits,
    # an unquoted # starts a comment: slurm's opt.c _get_argument). The pattern is pasted
    # unquoted, so a job folder under "My Project" sends Slurm's log to "/…/My".
    log = f"{tmp_path}/My Project #1/slurm-%A_%a.out"
    files = replace(_files(tmp_path), log_pattern=log)
    text = batch_script(sample_manifest, RUN_ID, _spec(sample_manifest), SEEDS, SlurmOptions(),
                        files, FETCH)
    (line,) = [line for line in _sbatch_lines(text) if line.startswith("#SBATCH --output")]
    assert shlex.split(line.removeprefix("#SBATCH"), comments=True) == [f"--output={log}"]


def test_each_task_takes_its_seed_from_the_array(tmp_path: Path,
                                                 sample_manifest: Manifest) -> None:
    text = _script(sample_manifest, tmp_path, seeds=(5, 6, 7))
    assert "SEEDS=(5 6 7)" in text and "TASK=${SLURM_ARRAY_TASK_ID:-0}" in text
    assert "#SBATCH --array=0-2" in text


def test_seed_variables_are_left_to_the_task(tmp_path: Path, sample_manifest: Manifest) -> None:
    spec = _spec(sample_manifest)
    assert spec.env["REPROBOX_SEED"] == "1234"
    text = _script(sample_manifest, tmp_path)
    env_line = text.split("docker_env() {")[1].splitlines()[1]
    assert "OMP_NUM_THREADS=1" in env_line
    assert "PYTHONHASHSEED" not in env_line and "REPROBOX_SEED" not in env_line


def test_a_value_with_a_newline_is_refused(tmp_path: Path, sample_manifest: Manifest) -> None:
    spec = _spec(sample_manifest)
    spec = replace(spec, env={**spec.env, "RUN_NOTE": "two\nlines"})
    with pytest.raises(UsageError, match="'RUN_NOTE' cannot be passed to a job"):
        _script(sample_manifest, tmp_path, spec=spec)


def test_the_same_input_gives_the_same_bytes(tmp_path: Path, sample_manifest: Manifest) -> None:
    options = SlurmOptions(partition="debug", gpus=1, time="10", cpus=2)
    first = _script(sample_manifest, tmp_path, options=options)
    assert _script(sample_manifest, tmp_path, options=options) == first
    reordered = _spec(sample_manifest)
    reordered = replace(reordered, env=dict(reversed(list(reordered.env.items()))))
    assert _script(sample_manifest, tmp_path, options=options, spec=reordered) == first


def test_seeds_are_needed_and_at_most_a_job_array(tmp_path: Path,
                                                  sample_manifest: Manifest) -> None:
    assert "--array=0-999" in _script(sample_manifest, tmp_path, seeds=tuple(range(MAX_TASKS)))
    with pytest.raises(UsageError, match="1001 seeds: a Slurm job array holds at most 1000"):
        _script(sample_manifest, tmp_path, seeds=tuple(range(MAX_TASKS + 1)))
    with pytest.raises(UsageError, match="no seed"):
        _script(sample_manifest, tmp_path, seeds=())


def test_an_export_has_no_probe(tmp_path: Path, sample_manifest: Manifest) -> None:
    exported = _script(sample_manifest, tmp_path, probe=False)
    assert "environment.out" not in exported and "/opt/reprobox/probe" not in exported
    assert "reprobox export slurm" in exported
    probed = _script(sample_manifest, tmp_path)
    assert "environment.out" in probed and "/opt/reprobox/probe" in probed


def test_gpus_are_the_jobs_own(tmp_path: Path, sample_manifest: Manifest) -> None:
    assert "--gpus" not in _script(sample_manifest, tmp_path).split("gpu_flags() {")[1][:200]
    text = _script(sample_manifest, tmp_path, options=SlurmOptions(gpus=2))
    assert '"\\"device=$SLURM_JOB_GPUS\\""' in text and "--gpus 2" in text
    assert "Slurm gave this job no GPU ids" in text


def test_the_job_keeps_its_files_to_its_user(tmp_path: Path, sample_manifest: Manifest) -> None:
    # The task folder holds the replay's environment (container.env) and outputs, on storage
    # other users of the cluster can often read: the script's umask, not the caller's, decides.
    env = {**fake_path(tmp_path), "SLURM_JOB_ID": "42"}
    path = _write(tmp_path, _script(sample_manifest, tmp_path))
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, "-c", f'umask 022 && exec {bash} "$0"', str(path)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    out = tmp_path / "work" / "task-0"
    made = [out, out / "container.env", out / "stdout.log",
            out / "exit_code", out / "environment.out", out / "fetched" / "out",
            out / "fetched" / "out" / "weights.npy"]
    assert {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o077)
            for p in made} == {p.relative_to(tmp_path).as_posix(): "0o0" for p in made}


# --- the script, run -----------------------------------------------------------------------------


def _run_task(tmp_path: Path, manifest: Manifest, task: int, extra: dict[str, str] | None = None,
              options: SlurmOptions | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                            Path, dict[str, str]]:
    env = {**fake_path(tmp_path), "SLURM_ARRAY_TASK_ID": str(task), "SLURM_JOB_ID": "42",
           **(extra or {})}
    path = _write(tmp_path, _script(manifest, tmp_path, options=options))
    done = run_script(path, env)
    return done, tmp_path / "work" / f"task-{task}", env


def _option_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_a_task_replays_its_seed_with_docker_and_leaves_its_results(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    done, out, env = _run_task(tmp_path, sample_manifest, task=1)
    assert done.returncode == 3, done.stderr  # the replay's own exit code
    assert (out / "exit_code").read_text() == "3\n"
    assert (out / "stdout.log").read_text() == "hello"
    assert (out / "engine").read_text() == "docker\n"
    assert float((out / "duration_s").read_text()) >= 0
    assert (out / "started").read_text().strip().endswith("+00:00")
    assert (out / "node").read_text().strip()
    assert not (out / "error").exists() and not (out / "timed_out").exists()
    container_env = (out / "container.env").read_text().splitlines()
    assert container_env[-2:] == ["PYTHONHASHSEED=6", "REPROBOX_SEED=6"]
    assert "OMP_NUM_THREADS=1" in container_env and "REPROBOX_SEED=1234" not in container_env
    assert (out / "environment.out").read_text() == "{}\n"
    assert (out / "environment.rc").read_text() == "0\n"
    assert (out / "fetched" / "out" / "weights.npy").read_text() == "copied /app/out/weights.npy"
    state = json.loads((out / "fetched" / ".reprobox-state" / "state-1.json").read_text())
    assert state == {"seed": 6}
    calls = docker_calls(env)
    (create,) = [argv for argv in calls if argv[1] == "create"]
    assert _option_values(create, "--network") == ["none"]
    assert _option_values(create, "--cap-drop") == ["ALL"]
    assert _option_values(create, "--env-file") == [str(out / "container.env")]
    assert _option_values(create, "--name") == ["reprobox-42-1"]
    assert "--read-only" in create and create[-4:] == ["python", "train.py", "--epochs", "3"]
    assert ["docker", "rm", "--volumes", "reprobox-42-1"] in calls
    assert not any(argv[1] == "load" for argv in calls)  # the node had the image


def test_a_node_without_the_image_loads_the_saved_one(tmp_path: Path,
                                                      sample_manifest: Manifest) -> None:
    done, out, env = _run_task(tmp_path, sample_manifest, task=0, extra={"FAKE_NO_IMAGE": "1"})
    assert done.returncode == 3, done.stderr
    assert ["docker", "load", "--input", str(tmp_path / "images" / "i.tar")] in docker_calls(env)
    assert (out / "container.env").read_text().splitlines()[-1] == "REPROBOX_SEED=5"


def test_a_replay_stopped_by_its_timeout_is_marked(tmp_path: Path,
                                                   sample_manifest: Manifest) -> None:
    done, out, env = _run_task(tmp_path, sample_manifest, task=0, extra={"FAKE_EXIT": "124"})
    assert done.returncode == 137, done.stderr
    assert (out / "timed_out").exists()
    assert (out / "exit_code").read_text() == "137\n"  # what `docker wait` said after the kill
    assert ["docker", "kill", "reprobox-42-0"] in docker_calls(env)


def test_an_engine_the_script_does_not_know_is_an_error(tmp_path: Path,
                                                        sample_manifest: Manifest) -> None:
    done, out, env = _run_task(tmp_path, sample_manifest, task=1,
                               extra={"REPROBOX_CONTAINER_ENGINE": "podman"})
    assert done.returncode != 0
    assert "REPROBOX_CONTAINER_ENGINE=podman" in (out / "error").read_text()
    assert not (out / "exit_code").exists() and docker_calls(env) == []


def test_a_node_with_no_container_engine_is_an_error(tmp_path: Path,
                                                     sample_manifest: Manifest) -> None:
    env = fake_path(tmp_path)
    (tmp_path / "bin" / "docker").unlink()
    path = _write(tmp_path, _script(sample_manifest, tmp_path))
    done = run_script(path, env)
    out = tmp_path / "work" / "task-0"
    assert done.returncode != 0
    error = (out / "error").read_text()
    assert error.startswith("neither apptainer nor docker is on PATH on ")
    assert error.strip() != "neither apptainer nor docker is on PATH on"  # the node is named
    assert not (out / "exit_code").exists()


def test_docker_asked_for_and_missing_is_an_error(tmp_path: Path,
                                                  sample_manifest: Manifest) -> None:
    env = fake_path(tmp_path)
    (tmp_path / "bin" / "docker").unlink()
    path = _write(tmp_path, _script(sample_manifest, tmp_path,
                                    options=SlurmOptions(engine="docker")))
    done = run_script(path, env)
    assert done.returncode != 0
    assert "docker is not on PATH" in (tmp_path / "work" / "task-0" / "error").read_text()


def test_a_container_docker_cannot_create_fails_the_task(tmp_path: Path,
                                                         sample_manifest: Manifest) -> None:
    env = fake_path(tmp_path)
    docker = tmp_path / "bin" / "docker"
    docker.write_text(docker.read_text().replace('print("f00dcafe")', "sys.exit(125)"))
    done = run_script(_write(tmp_path, _script(sample_manifest, tmp_path)), env)
    out = tmp_path / "work" / "task-0"
    assert done.returncode != 0 and not (out / "exit_code").exists()
    assert "docker could not create the replay container" in (out / "error").read_text()


def test_slurms_gpus_are_handed_to_docker_by_their_global_ids(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    # SLURM_JOB_GPUS holds the node's own indexes, which Docker reads; CUDA_VISIBLE_DEVICES
    # is renumbered from 0 where Slurm constrains devices with cgroups
    given = {"SLURM_JOB_GPUS": "5,7", "CUDA_VISIBLE_DEVICES": "0,1", "FAKE_EXIT": "0"}
    done, _, env = _run_task(tmp_path, sample_manifest, task=0, extra=given,
                             options=SlurmOptions(gpus=2))
    assert done.returncode == 0, done.stderr
    calls: list[Any] = docker_calls(env)
    (create,) = [argv for argv in calls if argv[1] == "create"]
    (probe,) = [argv for argv in calls if argv[1] == "run"]
    assert _option_values(create, "--gpus") == _option_values(probe, "--gpus") == ['"device=5,7"']


@pytest.mark.parametrize("given", [{"CUDA_VISIBLE_DEVICES": "2,3"}, {"SLURM_JOB_GPUS": ""}, {}])
def test_a_slurm_job_without_gpu_ids_is_refused_not_guessed(
        tmp_path: Path, sample_manifest: Manifest, given: dict[str, str]) -> None:
    done, out, env = _run_task(tmp_path, sample_manifest, task=0, extra=given,
                               options=SlurmOptions(gpus=2))
    assert done.returncode != 0
    assert "Slurm gave this job no GPU ids" in (out / "error").read_text()
    assert not [argv for argv in docker_calls(env) if argv[1] in ("create", "run")]


def test_run_by_hand_outside_slurm_docker_picks_the_gpus(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    env = {**fake_path(tmp_path), "FAKE_EXIT": "0"}
    path = _write(tmp_path, _script(sample_manifest, tmp_path, options=SlurmOptions(gpus=2)))
    done = run_script(path, env)
    assert done.returncode == 0, done.stderr
    (create,) = [argv for argv in docker_calls(env) if argv[1] == "create"]
    assert _option_values(create, "--gpus") == ["2"]


@pytest.mark.parametrize(("given", "cpus"), [({"SLURM_CPUS_PER_TASK": "3"}, "3"), ({}, "4")])
def test_the_container_gets_the_jobs_cpus(tmp_path: Path, sample_manifest: Manifest,
                                          given: dict[str, str], cpus: str) -> None:
    # Docker's container lives outside the job's cgroup: without --cpus it would use the
    # whole node, and thread counts read from the CPUs it sees would differ from the job's.
    done, _, env = _run_task(tmp_path, sample_manifest, task=0, extra=given,
                             options=SlurmOptions(cpus=4))
    assert done.returncode == 3, done.stderr
    (create,) = [argv for argv in docker_calls(env) if argv[1] == "create"]
    assert _option_values(create, "--cpus") == [cpus]


def test_the_container_is_held_to_the_jobs_cores_and_memory(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    done, _, env = _run_task(tmp_path, sample_manifest, task=0,
                             extra={"SLURM_MEM_PER_NODE": "2048"})
    assert done.returncode == 3, done.stderr
    (create,) = [argv for argv in docker_calls(env) if argv[1] == "create"]
    allowed = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("Cpus_allowed_list:"))
    assert _option_values(create, "--cpuset-cpus") == [allowed]
    assert _option_values(create, "--memory") == ["2048m"]


def test_a_replays_own_memory_limit_is_not_doubled(tmp_path: Path,
                                                   sample_manifest: Manifest) -> None:
    env = {**fake_path(tmp_path), "SLURM_JOB_ID": "42", "SLURM_MEM_PER_NODE": "2048"}
    spec = _spec(sample_manifest, memory="1g")
    path = _write(tmp_path, _script(sample_manifest, tmp_path, spec=spec))
    run_script(path, env)
    (create,) = [argv for argv in docker_calls(env) if argv[1] == "create"]
    assert _option_values(create, "--memory") == ["1g"]


@pytest.mark.parametrize("exit_code", [0, 1, 3])
def test_the_task_ends_with_the_replays_exit_code(tmp_path: Path, sample_manifest: Manifest,
                                                  exit_code: int) -> None:
    # so that Slurm (sacct, --dependency=afterok) sees a replay that failed as FAILED
    done, out, _ = _run_task(tmp_path, sample_manifest, task=0,
                             extra={"FAKE_EXIT": str(exit_code)})
    assert done.returncode == exit_code, done.stderr
    assert (out / "exit_code").read_text() == f"{exit_code}\n"
    assert not (out / "timed_out").exists()


def _terminated(path: Path, env: dict[str, str], running: Path) -> tuple[int, float]:
    """Run the script until the replay runs, send its shell SIGTERM as Slurm does at the time
    limit or on scancel, and wait; its exit status and the seconds it took to end."""
    bash = shutil.which("bash")
    assert bash is not None
    with subprocess.Popen([bash, str(path)], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as shell:
        deadline = time.monotonic() + 30
        while not running.exists():
            assert shell.poll() is None and time.monotonic() < deadline, "the replay never ran"
            time.sleep(0.02)
        time.sleep(0.2)  # the replay has begun; the script sits in `wait`
        shell.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            status = shell.wait(timeout=20)
        finally:
            if shell.poll() is None:
                shell.kill()
    return status, time.monotonic() - sent


def test_slurms_sigterm_stops_a_docker_replay_at_once(tmp_path: Path,
                                                      sample_manifest: Manifest) -> None:
    # The container runs under dockerd, outside the job: only the script can stop it, and it
    # must do so when SIGTERM comes, not when the replay ends (after Slurm's SIGKILL).
    env = {**fake_path(tmp_path), "SLURM_JOB_ID": "42", "FAKE_SLEEP": "60"}
    path = _write(tmp_path, _script(sample_manifest, tmp_path))
    status, took = _terminated(path, env, tmp_path / "containers" / "running")
    out = tmp_path / "work" / "task-0"
    assert took < 10
    assert (out / "timed_out").exists()
    assert ["docker", "kill", "reprobox-42-0"] in docker_calls(env)
    assert (out / "exit_code").read_text() == "137\n" and status == 137
    assert (out / "stdout.log").read_text() == "hello"
    assert (out / "fetched" / "out" / "weights.npy").is_file()  # outputs fetched all the same
    assert ["docker", "rm", "--volumes", "reprobox-42-0"] in docker_calls(env)


def test_slurms_sigterm_stops_an_apptainer_replay_at_once(tmp_path: Path,
                                                          sample_manifest: Manifest) -> None:
    # Apptainer's replay is the job's own child: the script hands SIGTERM on to it at once.
    env = _with_apptainer(tmp_path, SLEEPING_APPTAINER)
    env = {**env, "FAKE_SLEEP": "60"}
    path = _write(tmp_path, _script(sample_manifest, tmp_path))
    status, took = _terminated(path, env, tmp_path / "running")
    out = tmp_path / "work" / "task-0"
    assert took < 10
    assert (out / "engine").read_text() == "apptainer\n" and (out / "timed_out").exists()
    assert (out / "exit_code").read_text() == f"{status}\n" and status != 0
    assert (out / "fetched" / ".reprobox-state" / "seed").read_text() == "5"


def test_a_work_folder_with_spaces_and_quotes_is_taken_literally(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    odd = tmp_path / "shared storage" / "o'neil $HOME"
    odd.mkdir(parents=True)
    done, out, _ = _run_task(odd, sample_manifest, task=0)
    assert done.returncode == 3, done.stderr
    assert (out / "exit_code").read_text() == "3\n"
    assert (out / "fetched" / "out" / "weights.npy").is_file()


def _with_apptainer(tmp_path: Path, fake: str = FAKE_APPTAINER) -> dict[str, str]:
    """`fake_path` with a fake apptainer too, and the saved image replay_on_slurm leaves."""
    env = fake_path(tmp_path)
    apptainer = tmp_path / "bin" / "apptainer"
    apptainer.write_text(fake.format(python=sys.executable))
    apptainer.chmod(0o755)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "i.tar").write_text("TAR")
    return env


def test_a_node_with_apptainer_replays_with_it(tmp_path: Path,
                                               sample_manifest: Manifest) -> None:
    env = {**_with_apptainer(tmp_path), "SLURM_ARRAY_TASK_ID": "1", "FAKE_EXIT": "0"}
    done = run_script(_write(tmp_path, _script(sample_manifest, tmp_path)), env)
    out = tmp_path / "work" / "task-1"
    assert done.returncode == 0, done.stderr
    assert (out / "engine").read_text() == "apptainer\n"
    assert (out / "exit_code").read_text() == "0\n"
    assert (out / "fetched" / ".reprobox-state" / "seed").read_text() == "6"
    assert (out / "fetched" / "train.py").is_file()  # the image's /app, copied out
    assert Path(tmp_path / "images" / "i.sif").read_text() == "SIF"
    calls = [json.loads(line) for line in Path(env["FAKE_LOG"]).read_text().splitlines()]
    replayed = calls[-1]
    assert replayed["argv"][-4:] == ["python", "train.py", "--epochs", "3"]
    assert replayed["env"]["APPTAINERENV_PYTHONHASHSEED"] == "6"
    assert replayed["env"]["APPTAINERENV_OMP_NUM_THREADS"] == "1"


def test_a_task_whose_job_folder_is_gone_does_nothing(tmp_path: Path,
                                                      sample_manifest: Manifest) -> None:
    """Cancelled with Ctrl-C, reprobox removes the job's folder: a task Slurm launched anyway
    must not make it again (nor run the replay)."""
    env = {**fake_path(tmp_path), "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "42"}
    script = _script(sample_manifest, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_script(_write(elsewhere, script), env)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "docker.jsonl").exists()


def test_an_exported_task_makes_its_job_folder(tmp_path: Path,
                                               sample_manifest: Manifest) -> None:
    env = {**fake_path(tmp_path), "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "42"}
    done = run_script(_write(tmp_path, _script(sample_manifest, tmp_path, probe=False)), env)
    # one folder per submission: two submissions of one export never share a task folder
    assert (tmp_path / "work-42" / "task-0" / "exit_code").is_file(), done.stderr
