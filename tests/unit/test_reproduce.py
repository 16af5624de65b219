"""REPRODUCE.md from real captured manifests: its facts, and Docker commands a replay would run."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from reprobox import engine, manifest, replay, reproduce
from reprobox.build import BuiltImage
from reprobox.manifest import FileRecord, Manifest, Output

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
TAG = "reprobox/numpy-sgd:0123456789ab"
BASE = "reprobox/python:3.11-bookworm"


def _manifest(name: str) -> Manifest:
    return manifest.read(MANIFESTS / f"{name}.yaml")


def _docker_run(text: str) -> list[str]:
    """The `docker run` command of the text's last shell block, as the shell would split it."""
    block = text.rsplit("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    (run,) = [line for line in lines if line.startswith("docker run ")]
    return shlex.split(run)


def _options(words: list[str], flag: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words) if word == flag]


@pytest.fixture
def sgd() -> Manifest:
    return _manifest("numpy-sgd")


def test_the_readme_names_the_command_seed_and_outputs(sgd: Manifest) -> None:
    text = reproduce.reproduce_md(sgd, TAG, BASE, "exp.rbx")
    assert "| command | `python train.py --epochs 5` |" in text
    assert "| seed | `1234` |" in text
    assert "| PYTHONHASHSEED | `1234` |" in text
    assert "| `REPROBOX_SEED` | `1234` |" in text
    assert "| exit code | 0 |" in text and "| duration | 0.122 s |" in text
    assert "`ce68a395a9066ebc3686e650c5f9c56a8b383d3c on master (clean)`" in text
    assert "scipy-openblas 0.3.27 (pthreads, threads: 2)" in text
    for output in sgd.outputs:
        assert f"| `{output.path}` | {output.size} | `{output.sha256}` | yes |" in text
    assert f"Image: `{TAG}`, built on `{BASE}`." in text
    assert "The run did not use a GPU." in text


def test_the_readme_is_deterministic(sgd: Manifest) -> None:
    first = reproduce.reproduce_md(sgd, TAG, None, "exp.rbx")
    assert first == reproduce.reproduce_md(_manifest("numpy-sgd"), TAG, None, "exp.rbx")
    assert "built on" not in first
    for name in ("numpy-sgd", "torch-h100", "cpu-torch240", "torch-h100-nogpufields"):
        text = reproduce.reproduce_md(_manifest(name), TAG, BASE, "exp.rbx")
        assert "\n\n\n" not in text and text.endswith("```\n"), name


def test_the_reprobox_commands_quote_the_archive_name(sgd: Manifest) -> None:
    text = reproduce.reproduce_md(sgd, TAG, None, "paper run (final).rbx")
    assert "reprobox verify 'paper run (final).rbx'" in text
    assert "reprobox unpack 'paper run (final).rbx' DIR" in text
    assert "reprobox replay DIR/bundle" in text and "reprobox compare DIR/bundle" in text


def test_docker_run_has_the_replay_hardening(sgd: Manifest) -> None:
    words = _docker_run(reproduce.reproduce_md(sgd, TAG, None, "exp.rbx"))
    assert words[:4] == ["docker", "run", "--name", reproduce.CONTAINER_NAME]  # outputs copied out
    assert _options(words, "--network") == ["none"]
    assert _options(words, "--cap-drop") == ["ALL"]
    assert _options(words, "--security-opt") == ["no-new-privileges"]
    assert _options(words, "--user") == ["1000:1000"]
    assert _options(words, "--tmpfs") == ["/tmp:rw,nosuid,nodev"]
    assert "--read-only" in words and "--init" in words and "--gpus" not in words
    assert words[-5:] == [TAG, "python", "train.py", "--epochs", "5"]


def test_docker_run_matches_what_the_engine_creates(sgd: Manifest) -> None:
    # The same flags as engine._create_kwargs gives the replay's container.
    built = BuiltImage(TAG, BASE, "3.11.7", "3.11.7")
    kwargs = engine._create_kwargs(replay.container_spec(sgd, built, (), timeout_s=60.0))
    words = _docker_run(reproduce.reproduce_md(sgd, TAG, None, "exp.rbx"))
    assert kwargs["network_mode"] == _options(words, "--network")[0]
    assert kwargs["cap_drop"] == _options(words, "--cap-drop")
    assert kwargs["security_opt"] == _options(words, "--security-opt")
    assert kwargs["user"] == _options(words, "--user")[0]
    assert kwargs["working_dir"] == _options(words, "--workdir")[0]
    assert [f"{k}:{v}" for k, v in kwargs["tmpfs"].items()] == _options(words, "--tmpfs")
    assert str(kwargs["pids_limit"]) == _options(words, "--pids-limit")[0]
    assert kwargs["read_only"] is True and kwargs["command"] == words[-4:]
    expected = dict(kwargs["environment"])
    expected.pop("REPROBOX_STATE_DIR")  # only reprobox reads the state files back
    env = dict(item.split("=", 1) for item in _options(words, "-e"))
    assert env == expected


def test_outputs_are_copied_out_not_mounted_over_the_code(sgd: Manifest) -> None:
    # a folder mounted over /app/out would hide whatever the image keeps in out/
    text = reproduce.reproduce_md(sgd, TAG, None, "exp.rbx")
    words = _docker_run(text)
    assert _options(words, "-v") == ["/app"]
    assert ("mkdir -p replay/out && docker cp reprobox-replay:/app/out/weights.npy "
            "replay/out/weights.npy") in text
    assert "docker load -i images/images.tar" in text


def test_outputs_at_the_project_root_are_copied_out(sgd: Manifest) -> None:
    loose = dataclasses.replace(sgd, outputs=(Output("model weights.pt", "ab" * 32, 10),))
    steps = reproduce.docker_steps(loose, TAG)
    words = shlex.split(steps[1].replace("\\\n", " "))
    assert _options(words, "--name") == [reproduce.CONTAINER_NAME] and "--rm" not in words
    assert _options(words, "-v") == ["/app"]
    assert steps[2] == ("mkdir -p replay && docker cp "
                        "'reprobox-replay:/app/model weights.pt' 'replay/model weights.pt'")
    assert steps[3] == "docker rm -v reprobox-replay"


def test_inputs_are_mounted_read_only(sgd: Manifest) -> None:
    with_input = dataclasses.replace(sgd, inputs=(FileRecord("data/train set.csv", "cd" * 32, 5),))
    text = reproduce.reproduce_md(with_input, TAG, None, "exp.rbx")
    words = _docker_run(text)
    assert "$PWD/inputs/data/train set.csv:/app/data/train set.csv:ro" in _options(words, "-v")
    assert f"| `data/train set.csv` | 5 | `{'cd' * 32}` |" in text


def test_a_gpu_run_gets_gpus_and_its_stack_described() -> None:
    gpu = _manifest("torch-h100")
    text = reproduce.reproduce_md(gpu, TAG, None, "exp.rbx")
    words = _docker_run(text)
    assert _options(words, "--gpus") == ["all"]
    assert "GPU: 1× NVIDIA H100 80GB HBM3 (9.0), driver 580.159.04, CUDA 13.0" in text
    assert "torch 2.11.0+cu130 (CUDA 13.0)" in text
    assert "| command | `/opt/torch/.venv/bin/python3 train.py` |" in text
    assert words[-2:] == ["python", "train.py"]  # the host's interpreter becomes the image's
    env = dict(item.split("=", 1) for item in _options(words, "-e"))
    assert env["REPROBOX_TF32_OFF"] == "matmul" and env["PYTHONHASHSEED"] == "42"


def test_values_that_need_quoting_survive_the_shell(sgd: Manifest) -> None:
    run = dataclasses.replace(sgd.run, argv=("python", "train.py", "--name", "it's $HOME; rm"),
                              env={"LANG": "C.UTF-8", "RUN_NOTE": "a|b `c`"})
    text = reproduce.reproduce_md(dataclasses.replace(sgd, run=run), TAG, None, "exp.rbx")
    words = _docker_run(text)
    assert words[-4:] == ["python", "train.py", "--name", "it's $HOME; rm"]
    assert "RUN_NOTE=a|b `c`" in _options(words, "-e")
    assert "| command | `python train.py --name 'it'\"'\"'s $HOME; rm'` |" in text
