"""Apptainer lines, commands and exports, run by bash against fake `apptainer` and `docker`.

No real Apptainer can run here (none is packaged for this host and nothing can be fetched), so
the fakes record exactly what a real one would be given: its argv and environment. What the
flags mean was checked against Apptainer's documentation and source, not here.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reprobox import manifest, preflight, replay
from reprobox.build import BuiltImage
from reprobox.cluster import apptainer
from reprobox.engine import ContainerSpec, Mount
from reprobox.errors import UsageError
from reprobox.manifest import FileRecord, Manifest

from .test_reproduce import MANIFESTS

TAG = "reprobox/numpy-sgd:0123456789ab"
RUN_ID = "20260101T120000Z-a1b2c3"
HARDENING = ["exec", "--containall", "--no-eval", "--no-mount", "bind-paths"]
INPUT = "data/train, set.csv"  # a comma: --bind could not take it
TRICKY = "a, b=c $HOME `id` 'single' \"double\" \\back\nsecond line"

FAKE_APPTAINER = """#!{python}
import csv, json, os, pathlib, sys, time
argv = sys.argv[1:]
prefixes = ("APPTAINERENV_", "SINGULARITYENV_", "APPTAINER_", "SINGULARITY_")
record = {{"argv": argv, "env": {{k: v for k, v in os.environ.items() if k.startswith(prefixes)}}}}
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
def mounts():
    for i, word in enumerate(argv):
        if word == "--mount":
            fields = dict(f.split("=", 1) for f in next(csv.reader([argv[i + 1]])) if "=" in f)
            yield fields["dst"], pathlib.Path(fields["src"])
def await_file(name):  # a gate between racing tasks, so that the race is the same each time
    deadline = time.monotonic() + 30
    while name and not pathlib.Path(name).exists():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.01)
if argv[0] == "build":
    if os.environ.get("FAKE_BUILD_STARTED"):
        pathlib.Path(os.environ["FAKE_BUILD_STARTED"]).touch()
    await_file(os.environ.get("FAKE_BUILD_AWAIT"))
    if os.environ.get("FAKE_BUILD_FAIL"):
        sys.exit(1)
    pathlib.Path(argv[argv.index("--force") + 1]).write_text(os.environ.get("FAKE_SIF", "SIF"))
elif "cp" in argv:  # copying the image's /app out
    if os.environ.get("FAKE_COPY_FAIL"):
        sys.exit(1)
    (dict(mounts())["/mnt"] / "train.py").write_text("print('from the image')")
else:  # the replay: leaves the seed it saw where the shim's state would be
    state = dict(mounts())["/app"] / ".reprobox-state"
    state.mkdir()
    (state / "seed").write_text(os.environ.get("APPTAINERENV_REPROBOX_SEED", "none"))
    sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""
FAKE_DOCKER = """#!{python}
import json, os, pathlib, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"argv": ["docker", *argv], "env": {{}}}}) + "\\n")
if argv[0] == "save":
    pathlib.Path(argv[argv.index("-o") + 1]).write_text("TAR")
"""


def _manifest(name: str = "numpy-sgd") -> Manifest:
    return manifest.read(MANIFESTS / f"{name}.yaml")


AS_CAPTURED = preflight.Preflight()


def _spec(m: Manifest, plan: preflight.Preflight = AS_CAPTURED,
          mounts: tuple[Mount, ...] = ()) -> ContainerSpec:
    built = BuiltImage(TAG, "reprobox/python:3.11-bookworm", "3.11.7", "3.11.7")
    return replay.container_spec(m, built, mounts, timeout_s=60.0, plan=plan)


def _with_input_and_env(m: Manifest) -> Manifest:
    run = dataclasses.replace(m.run, env={**m.run.env, "RUN_NOTE": TRICKY, "HOME": "/root"})
    return dataclasses.replace(m, run=run, inputs=(FileRecord(INPUT, "ab" * 32, 3),))


def _gpu_plan() -> preflight.Preflight:
    return preflight.Preflight(gpu_count=1, env={"CUDA_VISIBLE_DEVICES": "0"})


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def _mount(value: str) -> list[str]:
    """A --mount value's fields, as Apptainer's CSV reading gives them."""
    return next(csv.reader([value]))


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    """PATH with the fake `apptainer` and `docker` first; FAKE_LOG collects their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apptainer", FAKE_APPTAINER), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_LOG": str(tmp_path / "calls.jsonl"),
            "HOME": str(tmp_path)}


def _calls(env: dict[str, str]) -> list[dict[str, Any]]:
    log = Path(env["FAKE_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_exec_replays_the_spec_hardened() -> None:
    mounts = (Mount(f"/data/{INPUT}", f"/app/{INPUT}"),)
    spec = _spec(_manifest(), mounts=mounts)
    words = apptainer.exec_words(spec, shlex.quote("/s/re play.sif"), shlex.quote("/w/project"),
                                 gpus=False, scratch_dir=shlex.quote("/w/tmp"))
    argv = shlex.split(" ".join(words))
    assert argv == [
        "apptainer", *HARDENING, "--workdir", "/w/tmp", "--pwd", "/app",
        "--mount", 'type=bind,"src=/w/project",dst=/app',
        "--mount", f'type=bind,"src=/data/{INPUT}","dst=/app/{INPUT}",ro',
        "/s/re play.sif", "python", "train.py", "--epochs", "5"]
    assert _mount(_option(argv, "--mount")[1]) == [
        "type=bind", f"src=/data/{INPUT}", f"dst=/app/{INPUT}", "ro"]


def test_bind_sources_with_quotes_colons_and_commas_stay_one_field() -> None:
    source = '/d/a,b:c "quoted".csv'
    spec = _spec(_manifest(), mounts=(Mount(source, "/opt/in.csv"),))
    words = apptainer.exec_words(spec, "/s.sif", "/w/p", gpus=False)
    assert _mount(shlex.split(" ".join(words))[-6]) == [
        "type=bind", f"src={source}", "dst=/opt/in.csv", "ro"]


def test_the_network_is_cut_only_when_asked() -> None:
    spec = _spec(_manifest())
    assert "--net" not in apptainer.exec_words(spec, "/s.sif", "/w/p", gpus=False)
    argv = apptainer.exec_words(spec, "/s.sif", "/w/p", gpus=False, isolate_network=True)
    assert argv[6:9] == ["--net", "--network", "none"]


def test_the_project_folder_is_bound_exactly_where_the_spec_writes() -> None:
    spec = _spec(_manifest())
    with pytest.raises(UsageError, match="writes in /app"):
        apptainer.exec_words(spec, "/s.sif", None, gpus=False)
    probe = dataclasses.replace(spec, writable_dir=None, workdir="/tmp")
    argv = apptainer.exec_words(probe, "/s.sif", None, gpus=False)
    assert "--mount" not in argv and _option(argv, "--pwd") == ["/tmp"]
    with pytest.raises(UsageError, match="no writable folder"):
        apptainer.exec_words(probe, "/s.sif", "/w/p", gpus=False)


def test_env_exports_reach_apptainer_byte_for_byte(tmp_path: Path) -> None:
    spec = _spec(_with_input_and_env(_manifest()))
    inherited = {"APPTAINERENV_LEAK": "x", "SINGULARITYENV_OLD": "y", "APPTAINER_BIND": "/etc",
                 "SINGULARITY_BINDPATH": "/opt", "APPTAINER_CACHEDIR": "/cache"}
    script = "\n".join([*apptainer.env_export_lines(spec), "env -0"])
    out = _bash(script, tmp_path, {"PATH": "/usr/bin:/bin", **inherited})
    assert out.returncode == 0, out.stderr
    env = dict(item.split("=", 1) for item in out.stdout.split("\0") if item)
    passed = {k[len("APPTAINERENV_"):]: v for k, v in env.items()
              if k.startswith("APPTAINERENV_")}
    assert passed == {k: v for k, v in spec.env.items() if k != "HOME"}
    assert passed["RUN_NOTE"] == TRICKY and "HOME" not in passed
    assert not {"SINGULARITYENV_OLD", "APPTAINER_BIND", "SINGULARITY_BINDPATH"} & set(env)
    assert env["APPTAINER_CACHEDIR"] == "/cache"  # Apptainer's own settings stay


@pytest.mark.parametrize(("host", "expected"), [(None, "0"), ("2,3", "2,3"), ("", "")])
def test_gpus_follow_the_hosts_allocation(tmp_path: Path, host: str | None,
                                          expected: str) -> None:
    spec = _spec(_manifest("torch-h100"), plan=_gpu_plan())
    env = {"PATH": "/usr/bin:/bin", **({} if host is None else {"CUDA_VISIBLE_DEVICES": host})}
    script = "\n".join([*apptainer.env_export_lines(spec),
                        'printf %s "$APPTAINERENV_CUDA_VISIBLE_DEVICES"'])
    assert _bash(script, tmp_path, env).stdout == expected
    assert "--nv" in apptainer.exec_words(spec, "/s.sif", "/w/p", gpus=True)


def test_named_gpus_keep_the_hosts_numbering() -> None:
    # --nv hands over every GPU unrenumbered, unlike Docker's device requests
    spec = dataclasses.replace(_spec(_manifest("torch-h100"), plan=_gpu_plan()),
                               gpu_ids=("2", "GPU-5c89852c"), gpu_count=0)
    assert apptainer.apptainer_env(spec)["CUDA_VISIBLE_DEVICES"] == "2,GPU-5c89852c"
    cpu = _spec(_manifest("torch-h100"), plan=preflight.Preflight(
        env={"CUDA_VISIBLE_DEVICES": ""}))
    assert apptainer.apptainer_env(cpu)["CUDA_VISIBLE_DEVICES"] == ""
    assert "--nv" not in apptainer.exec_words(cpu, "/s.sif", "/w/p", gpus=False)
    assert not any("CUDA" in line for line in apptainer.env_export_lines(cpu)[1:-1]
                   if "${" in line)


def test_odd_env_names_and_device_lists_are_refused() -> None:
    spec = _spec(_manifest())
    with pytest.raises(UsageError, match="'A-B'"):
        apptainer.env_export_lines(dataclasses.replace(spec, env={"A-B": "1"}))
    odd = dataclasses.replace(spec, gpu_ids=("0}; rm -rf /",))
    with pytest.raises(UsageError, match="not indexes or UUIDs"):
        apptainer.env_export_lines(odd)
    with pytest.raises(UsageError, match="no command"):
        apptainer.exec_words(dataclasses.replace(spec, argv=()), "/s.sif", "/w/p", gpus=False)


def _race_two_builds(tmp_path: Path, fakes: dict[str, str], script: str) -> tuple[int, int]:
    """Task A lands its SIF while task B is still building; B lands after: (inode after A,
    inode after B). Both passed the `[ ! -s ]` check before either landed."""
    gates = Path(fakes["PATH"].split(":")[0])  # out of the folder listings
    first = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env={
        **fakes, "FAKE_SIF": "SIF of A", "FAKE_BUILD_AWAIT": str(gates / "b-building")})
    second = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env={
        **fakes, "FAKE_SIF": "SIF of B", "FAKE_BUILD_STARTED": str(gates / "b-building"),
        "FAKE_BUILD_AWAIT": str(gates / "a-landed")})
    assert first.wait(timeout=60) == 0
    after_first = (tmp_path / "re play.sif").stat().st_ino
    (gates / "a-landed").touch()
    assert second.wait(timeout=60) == 0
    return after_first, (tmp_path / "re play.sif").stat().st_ino


def test_the_sif_is_built_once_and_the_first_that_lands_is_kept(tmp_path: Path,
                                                                fakes: dict[str, str]) -> None:
    (tmp_path / "image.tar").write_text("TAR")
    script = "\n".join(apptainer.build_sif_lines("image.tar", shlex.quote("re play.sif")))
    after_first, after_second = _race_two_builds(tmp_path, fakes, script)
    # Tasks on other nodes may already run A's SIF: replacing it gives them stale handles.
    assert after_second == after_first
    assert (tmp_path / "re play.sif").read_text() == "SIF of A"
    assert _bash(script, tmp_path, fakes).returncode == 0
    builds = [call["argv"] for call in _calls(fakes)]
    assert len(builds) == 2  # both raced; the third found the SIF
    for argv in builds:
        assert argv[:2] == ["build", "--force"] and argv[3] == "docker-archive:image.tar"
        assert argv[2].startswith("re play.sif.partial.")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bin", "calls.jsonl", "image.tar", "re play.sif"]


def test_without_hard_links_mv_keeps_the_first_sif_too(tmp_path: Path,
                                                       fakes: dict[str, str]) -> None:
    no_links = Path(fakes["PATH"].split(":")[0]) / "ln"
    no_links.write_text("#!/bin/sh\necho 'ln: Operation not permitted' >&2\nexit 1\n")
    no_links.chmod(0o755)
    (tmp_path / "image.tar").write_text("TAR")
    script = "\n".join(apptainer.build_sif_lines("image.tar", shlex.quote("re play.sif")))
    after_first, after_second = _race_two_builds(tmp_path, fakes, script)
    assert after_second == after_first
    assert (tmp_path / "re play.sif").read_text() == "SIF of A"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bin", "calls.jsonl", "image.tar", "re play.sif"]


def test_a_failed_build_is_fine_where_another_task_landed_one(tmp_path: Path,
                                                               fakes: dict[str, str]) -> None:
    script = "\n".join(apptainer.build_sif_lines("image.tar", "out.sif"))
    gates = Path(fakes["PATH"].split(":")[0])
    failing = subprocess.Popen(["bash", "-c", f"{script} || exit 7"], cwd=tmp_path, env={
        **fakes, "FAKE_BUILD_FAIL": "1", "FAKE_BUILD_STARTED": str(gates / "started"),
        "FAKE_BUILD_AWAIT": str(gates / "landed")})
    assert subprocess.run(["sh", "-c", f"until [ -e {gates}/started ]; do sleep 0.01; done"],
                          timeout=30, check=False).returncode == 0
    (tmp_path / "out.sif").write_text("SIF of another task")
    (gates / "landed").touch()
    assert failing.wait(timeout=60) == 0  # the step's status is whether a SIF is there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "calls.jsonl", "out.sif"]


def test_a_failed_build_leaves_nothing(tmp_path: Path, fakes: dict[str, str]) -> None:
    script = "\n".join(apptainer.build_sif_lines("image.tar", "out.sif"))
    result = _bash(f"{script} || exit 7", tmp_path, {**fakes, "FAKE_BUILD_FAIL": "1"})
    assert result.returncode == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "calls.jsonl"]


def test_the_project_copy_replaces_a_stale_one(tmp_path: Path, fakes: dict[str, str]) -> None:
    project = tmp_path / "task 0" / "fetched"
    project.mkdir(parents=True)
    (project / "stale.npy").write_text("old outputs")
    script = "\n".join(apptainer.prepare_project_lines("/s.sif", '"$PWD/task 0/fetched"'))
    assert _bash(script, tmp_path, fakes).returncode == 0, _calls(fakes)
    assert sorted(p.name for p in project.iterdir()) == ["train.py"]
    assert sorted(p.name for p in project.parent.iterdir()) == ["fetched"]  # no .partial
    (argv,) = [call["argv"] for call in _calls(fakes)]
    assert argv == ["exec", "--containall", "--no-eval", "--no-mount", "bind-paths", "--mount",
                    f'type=bind,"src={project}.partial",dst=/mnt', "/s.sif", "cp", "-R",
                    "/app/.", "/mnt/"]
    failed = _bash(f"{script} || exit 9", tmp_path, {**fakes, "FAKE_COPY_FAIL": "1"})
    assert failed.returncode == 9 and (project / "train.py").exists()  # the last copy stays


def test_bind_points_are_made_in_the_project_copy(tmp_path: Path) -> None:
    mounts = (Mount("/d/x", f"/app/{INPUT}"), Mount("/d/y", "/app/top.csv"),
              Mount("/probe/p.py", "/opt/reprobox/probe/p.py"))
    spec = _spec(_manifest(), mounts=mounts)
    lines = apptainer.bind_point_lines(spec, '"$PWD"/proj')
    assert len(lines) == 2 and lines[0].endswith(" &&")
    assert _bash("\n".join(lines), tmp_path, {"PATH": "/usr/bin:/bin"}).returncode == 0
    assert (tmp_path / "proj" / INPUT).is_file() and (tmp_path / "proj" / "top.csv").is_file()
    assert not (tmp_path / "proj" / "opt").exists()


def _export(m: Manifest, spec: ContainerSpec | None = None,
            seeds: tuple[int | None, ...] = (None, 7)) -> dict[str, str]:
    return apptainer.export_text(m, spec or _spec(m), RUN_ID, seeds)


def test_the_export_is_deterministic_and_bash_parses_it(tmp_path: Path) -> None:
    m = _with_input_and_env(_manifest())
    files = _export(m)
    assert files == _export(_with_input_and_env(_manifest()))
    assert sorted(_export(_manifest())) == [f"reprobox-{RUN_ID}.def", "run-apptainer.sh"]
    assert sorted(files) == ["run-apptainer.sh"]  # RUN_NOTE's line break: no .def
    assert "# No definition file was written: RUN_NOTE holds a line break" in files[
        "run-apptainer.sh"]
    script = tmp_path / "run-apptainer.sh"
    script.write_text(files["run-apptainer.sh"])
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert files["run-apptainer.sh"].startswith("#!/usr/bin/env bash\n")
    assert "shares the host's network" in files["run-apptainer.sh"]


def _run_export(tmp_path: Path, fakes: dict[str, str], m: Manifest, spec: ContainerSpec,
                **env: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path / "work dir"
    (work / "inputs" / "data").mkdir(parents=True)
    (work / "inputs" / INPUT).write_text("x,y\n")
    (work / "run-apptainer.sh").write_text(_export(m, spec)["run-apptainer.sh"])
    stray = {"APPTAINERENV_LEAK": "x", "APPTAINER_BIND": "/etc"}
    result = subprocess.run(["bash", "run-apptainer.sh"], cwd=work, capture_output=True,
                            text=True, env={**fakes, **stray, **env}, timeout=120)
    return work, result


def test_the_export_runs_each_seed_with_what_apptainer_needs(
        tmp_path: Path, fakes: dict[str, str]) -> None:
    m = _with_input_and_env(_manifest())
    work, result = _run_export(tmp_path, fakes, m, _spec(m))
    assert result.returncode == 0, result.stderr
    calls = _calls(fakes)
    assert [call["argv"][0] for call in calls] == ["docker", "build", *["exec"] * 4]
    assert calls[0]["argv"] == ["docker", "save", TAG, "-o", "image.tar"]
    sif = f"reprobox-{RUN_ID}.sif"
    assert calls[1]["argv"][3] == "docker-archive:image.tar"
    for seed, copy, run in ((1234, calls[2], calls[3]), (7, calls[4], calls[5])):
        project = work / f"replay-seed-{seed}"
        assert copy["argv"][-4:] == ["cp", "-R", "/app/.", "/mnt/"]
        assert run["argv"] == [
            *HARDENING, "--workdir", f"{project}.tmp", "--pwd", "/app",
            "--mount", f'type=bind,"src={project}",dst=/app',
            "--mount", f'type=bind,"src={work}/inputs/{INPUT}","dst=/app/{INPUT}",ro',
            sif, "python", "train.py", "--epochs", "5"]
        passed = {k: v for k, v in run["env"].items() if k.startswith("APPTAINERENV_")}
        assert passed["APPTAINERENV_RUN_NOTE"] == TRICKY
        assert passed["APPTAINERENV_REPROBOX_SEED"] == str(seed)
        assert passed["APPTAINERENV_PYTHONHASHSEED"] == str(seed)
        assert "APPTAINERENV_HOME" not in passed and "APPTAINERENV_LEAK" not in passed
        assert "APPTAINER_BIND" not in run["env"]
        assert (project / ".reprobox-state" / "seed").read_text() == str(seed)
        assert (project / "train.py").is_file() and (project / INPUT).is_file()
        assert (work / f"replay-seed-{seed}.exit_code").read_text() == "0\n"


def test_a_failed_replay_still_runs_the_other_seeds(tmp_path: Path,
                                                    fakes: dict[str, str]) -> None:
    m = _manifest()
    work, result = _run_export(tmp_path, fakes, m, _spec(m), FAKE_EXIT="3")
    assert result.returncode == 1
    for seed in (1234, 7):
        assert (work / f"replay-seed-{seed}.exit_code").read_text() == "3\n"


def test_only_gpu_replays_get_nv(tmp_path: Path, fakes: dict[str, str]) -> None:
    m = _manifest("torch-h100")
    _, result = _run_export(tmp_path, fakes, m, _spec(m, plan=_gpu_plan()),
                            CUDA_VISIBLE_DEVICES="1")
    assert result.returncode == 0, result.stderr
    runs = [call for call in _calls(fakes) if "cp" not in call["argv"]][2:]
    copies = [call for call in _calls(fakes) if "cp" in call["argv"]]
    assert len(runs) == 2 and all("--nv" in call["argv"] for call in runs)
    assert all(call["env"]["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "1" for call in runs)
    assert not any("--nv" in call["argv"] for call in copies)
    cpu_files = _export(_manifest(), seeds=(None,))["run-apptainer.sh"]
    assert "--nv" not in cpu_files


def test_the_definition_file_replays_one_seed(tmp_path: Path) -> None:
    m = _manifest("torch-h100")
    spec = _spec(m, plan=_gpu_plan())
    text = apptainer.definition_file(m, spec, RUN_ID, "image.tar")
    assert text.startswith("Bootstrap: docker-archive\nFrom: image.tar\n\n%labels\n")
    assert f"    reprobox.run-id {RUN_ID}\n    reprobox.tag {TAG}\n    reprobox.seed 42\n" in text
    sections = {block.split("\n", 1)[0]: block.split("\n", 1)[1]
                for block in text.split("\n\n")[1:]}
    assert sorted(sections) == ["%environment", "%help", "%labels", "%runscript"]
    assert sections["%runscript"] == "    cd /app || exit 1\n    exec python train.py"
    sourced = _bash(f"{sections['%environment']}\nenv -0", tmp_path, {})
    env = dict(item.split("=", 1) for item in sourced.stdout.split("\0") if item)
    expected = apptainer.apptainer_env(spec)
    assert {k: env[k] for k in expected} == expected and "HOME" not in expected
    assert "--nv" in sections["%help"] and "network" in sections["%help"]


def test_a_definition_file_cannot_carry_line_breaks() -> None:
    m = _with_input_and_env(_manifest())  # RUN_NOTE holds a newline
    with pytest.raises(UsageError, match="RUN_NOTE holds a line break"):
        apptainer.definition_file(m, _spec(m), RUN_ID, "image.tar")


def test_seeds_are_checked_like_other_exports() -> None:
    m = _manifest()
    with pytest.raises(UsageError, match="twice"):
        _export(m, seeds=(None, 1234))
    with pytest.raises(UsageError, match="not an integer"):
        _export(m, seeds=(2**32,))
    with pytest.raises(UsageError, match="no seed"):
        _export(m, seeds=())
    with pytest.raises(UsageError, match="cannot name files"):
        apptainer.export_text(m, _spec(m), "../x", (None,))


def test_the_captured_seed_changes_nothing_and_another_only_the_seed() -> None:
    m = _manifest()
    spec = _spec(m)
    text = _export(m, spec, seeds=(None, 99))["run-apptainer.sh"]
    first, second = text.split("# seed 1234 (as captured)\n")[1].split("# seed 99\n")
    exports = [line for line in first.splitlines() if line.startswith("export ")]
    assert exports == apptainer.env_export_lines(spec)[1:]
    changed = set(exports) ^ {line for line in second.splitlines() if line.startswith("export ")}
    assert sorted(changed) == sorted([
        "export APPTAINERENV_PYTHONHASHSEED=1234", "export APPTAINERENV_REPROBOX_SEED=1234",
        "export APPTAINERENV_PYTHONHASHSEED=99", "export APPTAINERENV_REPROBOX_SEED=99"])
