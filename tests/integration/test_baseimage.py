"""The locally bootstrapped base image and the choice of base image, on a real Docker daemon."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from reprobox import baseimage
from reprobox.baseimage import BaseImage
from reprobox.engine import ContainerSpec, DockerEngine, Mount
from reprobox.errors import BaseImageError

pytestmark = pytest.mark.docker

HOST_XY = f"{sys.version_info.major}.{sys.version_info.minor}"


def run_in(engine: DockerEngine, image: str, argv: tuple[str, ...], **fields: object
           ) -> tuple[int, str]:
    output = bytearray()
    spec = ContainerSpec(image=image, argv=argv, env={}, workdir="/", timeout_s=120,
                         **fields)  # type: ignore[arg-type]
    result = engine.run(spec, output.extend)
    return result.exit_code, output.decode()


def test_base_has_its_python_and_pip_on_path(
    docker_engine: DockerEngine, base_image: BaseImage
) -> None:
    script = ("for name in python python3 pip; do command -v $name; done; "
              "python -c 'import platform, sys; print(platform.python_version(), sys.prefix)'; "
              "pip --version")
    code, output = run_in(docker_engine, base_image.ref, ("sh", "-c", script))
    assert code == 0, output
    lines = output.splitlines()
    assert lines[:3] == ["/opt/venv/bin/python", "/opt/venv/bin/python3", "/opt/venv/bin/pip"]
    assert lines[3] == f"{base_image.python_version} /opt/venv"
    assert base_image.python_version.startswith(HOST_XY + ".")
    assert "/opt/venv/" in lines[4]


def test_base_labels_and_env(docker_engine: DockerEngine, base_image: BaseImage) -> None:
    labels = docker_engine.image_labels(base_image.ref)
    assert labels[baseimage.LABEL_BASE] == "1"
    assert labels[baseimage.LABEL_PYTHON] == base_image.python_version
    env = docker_engine.image_env(base_image.ref)
    assert env["PYTHONNOUSERSITE"] == "1" and env["LANG"] == "C.UTF-8"
    assert env["PATH"].startswith("/opt/venv/bin:")


def write_wheel(folder: Path, name: str = "rbprobe", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, made by hand so no build backend or index is needed."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "ANSWER = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_pip_installs_offline(
    docker_engine: DockerEngine, base_image: BaseImage, tmp_path: Path
) -> None:
    write_wheel(tmp_path).chmod(0o644)
    tmp_path.chmod(0o755)  # the container's user (uid 1000) must be able to read the mount
    script = ("pip install --no-index --no-deps --find-links /wheels --target /tmp/site rbprobe "
              "&& PYTHONPATH=/tmp/site python -c 'import rbprobe; print(rbprobe.ANSWER)'")
    code, output = run_in(docker_engine, base_image.ref, ("sh", "-c", script),
                          mounts=(Mount(str(tmp_path), "/wheels"),))
    assert code == 0, output
    assert output.splitlines()[-1] == "42"


def test_choose_falls_back_to_the_local_base_when_the_pull_fails(
    docker_engine: DockerEngine, base_image: BaseImage
) -> None:
    # No such release exists, so the pull fails here and on machines with a registry alike.
    captured = f"{HOST_XY}.999"
    notes: list[str] = []
    started = time.monotonic()
    chosen = baseimage.choose(docker_engine, captured, None, notes.append)
    assert time.monotonic() - started < 30
    assert chosen == BaseImage(base_image.ref, base_image.python_version, "local")
    assert len(notes) == 1 and "no registry answered" in notes[0]
    assert base_image.python_version in notes[0] and captured in notes[0]


def test_an_image_made_here_has_no_registry_digest_and_docker_info_answers(
    docker_engine: DockerEngine, base_image: BaseImage
) -> None:
    assert docker_engine.repo_digest(base_image.ref) is None  # imported, never pulled
    assert isinstance(docker_engine.gpu_runtimes(), tuple)  # this daemon has no NVIDIA runtime


def test_explicit_image_must_be_present(docker_engine: DockerEngine) -> None:
    with pytest.raises(BaseImageError, match="image reprobox-test/absent:0 is not present"):
        baseimage.choose(docker_engine, "3.11.7", "reprobox-test/absent:0", print)


def test_python_version_is_asked_of_an_unlabelled_image(
    docker_engine: DockerEngine, base_image: BaseImage, test_images: list[str],
    test_tag: Callable[[str], str], context_tar: Callable[[str], Path],
) -> None:
    ref = test_tag("unlabelled")
    context = context_tar(f'FROM {base_image.ref}\nLABEL {baseimage.LABEL_PYTHON}=""\n')
    image_id = docker_engine.build(context, {}, lambda line: None)
    test_images.append(image_id)
    docker_engine.tag(image_id, ref)
    chosen = baseimage.choose(docker_engine, "3.11.7", ref, print)
    assert chosen == BaseImage(ref, base_image.python_version, "user")


INTERRUPTED_MAKE = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from reprobox import baseimage
from reprobox.engine import DockerEngine
try:
    baseimage.make(DockerEngine(), sys.argv[1], None, None, lambda line: print(line, flush=True),
                   force=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


def scratch_dirs() -> set[str]:
    return {name for name in os.listdir("/var/tmp") if name.startswith("reprobox-base-")}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("debootstrap", path="/usr/sbin:/sbin"),
                    reason="bootstrapping needs root and debootstrap")
def test_ctrl_c_during_make_leaves_no_folder_mount_or_tag(
    docker_engine: DockerEngine, base_image: BaseImage
) -> None:
    client = docker.from_env()
    tagged_before = client.images.get(base_image.ref).id
    before = scratch_dirs()
    make = subprocess.Popen([sys.executable, "-c", INTERRUPTED_MAKE, HOST_XY],
                            stdout=subprocess.PIPE, text=True)
    assert make.stdout is not None
    for line in make.stdout:  # interrupt once debootstrap has mounted /proc in the chroot
        if line.startswith("I: Installing core packages"):
            break
    make.send_signal(signal.SIGINT)
    rest, _ = make.communicate(timeout=120)
    assert "INTERRUPTED" in rest
    assert scratch_dirs() == before
    assert "/var/tmp/reprobox-base-" not in Path("/proc/self/mountinfo").read_text()
    assert client.images.get(base_image.ref).id == tagged_before
    client.close()
