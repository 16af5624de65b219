"""Kubernetes Jobs from real captured manifests, checked against the Kubernetes API schema."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reprobox import manifest, preflight, replay, seeding
from reprobox.build import BuiltImage
from reprobox.cluster import kubernetes
from reprobox.cluster.kubernetes import KubernetesOptions
from reprobox.engine import ContainerSpec
from reprobox.errors import ManifestError, ReplayError, UsageError
from reprobox.manifest import FileRecord, Manifest

from .test_reproduce import MANIFESTS

TAG = "reprobox/numpy-sgd:0123456789ab"
DIGEST = "sha256:" + "ab12" * 16
IMAGE = f"registry.example:5000/team/numpy-sgd@{DIGEST}"
RUN_ID = "20260101T120000Z-a1b2c3"
# The newest Kubernetes the package ships schemas for: strict, so unknown fields fail too.
K8S_VERSION = kubernetes_validate.latest_version()
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")


def _manifest(name: str) -> Manifest:
    return manifest.read(MANIFESTS / f"{name}.yaml")


AS_CAPTURED = preflight.Preflight()
DEFAULTS = KubernetesOptions()


def _spec(m: Manifest, memory: str | None = None,
          plan: preflight.Preflight = AS_CAPTURED) -> ContainerSpec:
    built = BuiltImage(TAG, "reprobox/python:3.11-bookworm", "3.11.7", "3.11.7")
    return replay.container_spec(m, built, (), timeout_s=3600.5, memory=memory, plan=plan)


def _documents(m: Manifest, spec: ContainerSpec | None = None,
               seeds: tuple[int | None, ...] = (None,), run_id: str = RUN_ID,
               options: KubernetesOptions = DEFAULTS) -> list[dict[str, Any]]:
    return kubernetes.job_documents(m, spec or _spec(m), run_id, IMAGE, seeds, options)


def _jobs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == "Job"]


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _replay_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(job)["containers"]
    assert isinstance(container, dict)
    return container


def _env(job: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in _replay_container(job)["env"]}


def _validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.fixture
def sgd() -> Manifest:
    return _manifest("numpy-sgd")


# ---------------------------------------------------------------------------- the API schema


def test_the_schema_is_a_recent_kubernetes() -> None:
    major, minor = (int(part) for part in K8S_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 30)


@pytest.mark.parametrize("name", ["numpy-sgd", "torch-h100", "cpu-torch240", "clock-noise"])
def test_every_document_is_valid_for_the_kubernetes_api(name: str) -> None:
    m = _manifest(name)
    m = dataclasses.replace(m, inputs=(FileRecord("data/train set.csv", "cd" * 32, 5),))
    spec = dataclasses.replace(_spec(m, memory="8g"), gpu_count=2)
    options = KubernetesOptions(namespace="ml", node_selector={
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, cpu="4")
    documents = _documents(m, spec, seeds=(None, 7, 8), options=options)
    assert [doc["kind"] for doc in documents] == ["NetworkPolicy", "Job", "Job", "Job"]
    for document in documents:
        _validate(document)


def test_a_schema_violation_is_caught(sgd: Manifest) -> None:
    (job,) = _jobs(_documents(sgd))
    _validate(job)
    unknown = yaml.safe_load(yaml.safe_dump(job))
    _replay_container(unknown)["securityContext"]["readOnlyRoot"] = True  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(unknown)
    mistyped = yaml.safe_load(yaml.safe_dump(job))
    mistyped["spec"]["backoffLimit"] = "0"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(mistyped)


# ---------------------------------------------------------------------------- the image


@pytest.mark.parametrize("ref", [
    f"registry.example/run@{DIGEST}",
    f"localhost:5000/a/b-c__d.e@{DIGEST}",
    f"ghcr.io/lab/run:v1.2@{DIGEST}",
    f"run@{DIGEST}",
])
def test_a_ref_by_digest_is_accepted(ref: str) -> None:
    assert kubernetes.check_digest_ref(ref) == ref


@pytest.mark.parametrize("ref", [
    TAG,
    "registry.example/run:latest",
    "registry.example/run@sha256:abc",
    f"registry.example/Run@{DIGEST}",
    f"registry.example/run@sha512:{'ab' * 32}",
    f"registry.example/run@{DIGEST.upper()}",
    f" registry.example/run@{DIGEST}",
    "",
])
def test_a_ref_that_can_move_is_refused_with_the_push_hint(ref: str, sgd: Manifest) -> None:
    with pytest.raises(UsageError, match="not pinned by digest: a tag can move") as caught:
        kubernetes.job_documents(sgd, _spec(sgd), RUN_ID, ref, (None,), KubernetesOptions())
    assert f"docker tag {TAG} REGISTRY/NAME && docker push REGISTRY/NAME" in str(caught.value.hint)
    assert "--image REGISTRY/NAME@sha256:" in str(caught.value.hint)


def test_the_image_is_pinned_in_both_containers(sgd: Manifest) -> None:
    (job,) = _jobs(_documents(sgd))
    pod = _pod(job)
    assert [c["image"] for c in pod["initContainers"] + pod["containers"]] == [IMAGE, IMAGE]
    assert job["metadata"]["annotations"][kubernetes.IMAGE_ANNOTATION] == TAG


# ---------------------------------------------------------------------------- the Job


def test_the_job_fails_once_and_keeps_its_outputs(sgd: Manifest) -> None:
    (job,) = _jobs(_documents(sgd))
    assert job["apiVersion"] == "batch/v1"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 3601  # 3600.5 s, rounded up
    assert "ttlSecondsAfterFinished" not in job["spec"]
    pod = _pod(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert "namespace" not in job["metadata"] and "nodeSelector" not in pod
    labels = job["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/name": "reprobox", "reprobox.dev/run-id": RUN_ID,
                      "reprobox.dev/seed": "1234"}
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_the_command_and_workdir_are_the_local_replays(sgd: Manifest) -> None:
    spec = _spec(sgd)
    container = _replay_container(_jobs(_documents(sgd, spec))[0])
    assert container["command"] == ["python", "train.py", "--epochs", "5"] == list(spec.argv)
    assert container["workingDir"] == "/app"
    assert "args" not in container


def test_both_containers_have_the_replay_hardening(sgd: Manifest) -> None:
    (job,) = _jobs(_documents(sgd))
    pod = _pod(job)
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}
    for container in pod["initContainers"] + pod["containers"]:
        assert container["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "privileged": False,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def test_a_root_user_is_refused(sgd: Manifest) -> None:
    for user in ("0:0", "root", "1000"):
        with pytest.raises(UsageError, match="not a numeric non-root uid:gid"):
            _documents(sgd, dataclasses.replace(_spec(sgd), user=user))


def test_the_network_is_denied_by_a_policy_on_the_runs_pods(sgd: Manifest) -> None:
    policy, job = _documents(sgd)
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert _documents(sgd, options=KubernetesOptions(network_policy=False))[0]["kind"] == "Job"


def test_the_project_is_copied_onto_the_claim_then_mounted_over_app(sgd: Manifest) -> None:
    (job,) = _jobs(_documents(sgd))
    pod = _pod(job)
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["sh", "-c"]
    script = init["command"][2]
    assert script.startswith(f"mkdir -p /claim/{RUN_ID}/seed-1234 ||")
    assert script.endswith(f"cp -a /app/. /claim/{RUN_ID}/seed-1234/")
    assert "not empty" in script  # an earlier attempt's files are not reused
    # The claim's root, not a subPath: the kubelet would make a missing one as root.
    assert init["volumeMounts"] == [{"name": "outputs", "mountPath": "/claim"}]
    mounts = _replay_container(job)["volumeMounts"]
    assert mounts == [{"name": "outputs", "mountPath": "/app", "subPath": f"{RUN_ID}/seed-1234"},
                      {"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [
        {"name": "outputs", "persistentVolumeClaim": {"claimName": "reprobox-outputs"}},
        {"name": "tmp", "emptyDir": {}}]


def _run_copy(job: dict[str, Any], claim: Path, project: Path) -> subprocess.CompletedProcess[str]:
    """The init container's script, with the claim and /app at these host folders."""
    (init,) = _pod(job)["initContainers"]
    script = init["command"][2].replace("/claim/", f"{claim}/").replace("/app/.", f"{project}/.")
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.fixture
def image_app(tmp_path: Path) -> Path:
    project = tmp_path / "app"
    (project / "data").mkdir(parents=True)
    (project / "train.py").write_text("print('hi')")
    return project


def test_the_copy_makes_the_jobs_folder_on_a_fresh_claim(sgd: Manifest, tmp_path: Path,
                                                        image_app: Path) -> None:
    claim = tmp_path / "claim"
    claim.mkdir()
    first, seven = _jobs(_documents(sgd, seeds=(None, 7)))
    assert _run_copy(first, claim, image_app).returncode == 0
    assert _run_copy(seven, claim, image_app).returncode == 0  # the run's folder exists now
    for seed in (1234, 7):
        folder = claim / RUN_ID / f"seed-{seed}"
        assert sorted(p.name for p in folder.iterdir()) == ["data", "train.py"]
        assert folder.stat().st_uid == os.getuid()  # made by the run's user, not the kubelet
    again = _run_copy(first, claim, image_app)
    assert again.returncode == 1
    assert f"{RUN_ID}/seed-1234 on the outputs claim is not empty" in again.stderr


def test_a_folder_that_cannot_be_made_stops_the_copy(sgd: Manifest, tmp_path: Path,
                                                    image_app: Path) -> None:
    claim = tmp_path / "claim"
    claim.mkdir()
    (claim / RUN_ID).write_text("")  # in the way, as an unwritable parent is for uid 1000
    (job,) = _jobs(_documents(sgd))
    result = _run_copy(job, claim, image_app)
    assert result.returncode == 1
    assert (f"cannot make {RUN_ID}/seed-1234 on the outputs claim: the folders above it must "
            "be writable by uid 1000 or gid 1000") in result.stderr
    assert [p.name for p in claim.iterdir()] == [RUN_ID]


def test_inputs_are_mounted_read_only_from_their_claim(sgd: Manifest) -> None:
    inputs = (FileRecord("data/train set.csv", "cd" * 32, 5), FileRecord("vocab.txt", "ef" * 32, 9))
    with_inputs = dataclasses.replace(sgd, inputs=inputs)
    options = KubernetesOptions(inputs_claim="lab-data")
    (job,) = _jobs(_documents(with_inputs, options=options))
    mounts = _replay_container(job)["volumeMounts"]
    assert mounts[2:] == [
        {"name": "inputs", "mountPath": "/app/data/train set.csv", "subPath": "data/train set.csv",
         "readOnly": True},
        {"name": "inputs", "mountPath": "/app/vocab.txt", "subPath": "vocab.txt", "readOnly": True}]
    assert _pod(job)["volumes"][2] == {
        "name": "inputs", "persistentVolumeClaim": {"claimName": "lab-data", "readOnly": True}}


@pytest.mark.parametrize("path", ["../secret.csv", "/etc/passwd", "data/../../x"])
def test_an_input_outside_the_project_is_refused(path: str, sgd: Manifest) -> None:
    with pytest.raises(ManifestError, match="not a path inside the project"):
        _documents(dataclasses.replace(sgd, inputs=(FileRecord(path, "cd" * 32, 5),)))


def test_options_reach_the_documents(sgd: Manifest) -> None:
    options = KubernetesOptions(claim="lab-outputs", namespace="ml", name_prefix="exp",
                                node_selector={"nvidia.com/gpu.product": "NVIDIA-H100"},
                                cpu="500m")
    policy, job = _documents(sgd, options=options)
    assert policy["metadata"]["namespace"] == job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["name"] == f"exp-{RUN_ID.lower()}-seed-1234"
    pod = _pod(job)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "lab-outputs"}
    assert _replay_container(job)["resources"] == {"requests": {"cpu": "500m"}}


@pytest.mark.parametrize("options", [
    KubernetesOptions(claim="Outputs"),
    KubernetesOptions(inputs_claim="a_b"),
    KubernetesOptions(namespace="ML"),
    KubernetesOptions(name_prefix="-x"),
    KubernetesOptions(name_prefix="a-very-long-name-prefix"),
    KubernetesOptions(cpu="four"),
    KubernetesOptions(node_selector={"gpu product": "h100"}),
    KubernetesOptions(node_selector={"gpu": "H100 80GB"}),
])
def test_invalid_options_are_refused(options: KubernetesOptions, sgd: Manifest) -> None:
    with pytest.raises(UsageError):
        _documents(sgd, options=options)


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize("run_id", [
    RUN_ID,
    "bundle",
    "My Run (final)!",
    "___",
    "ünïcode-run",
    "x" * 200,
    "20260101T120000Z-" + "a" * 60,
    "..",
])
def test_names_labels_and_folders_are_valid_for_odd_run_ids(run_id: str, sgd: Manifest) -> None:
    documents = _documents(sgd, seeds=(None, seeding.MAX_SEED), run_id=run_id)
    for document in documents:
        name = document["metadata"]["name"]
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        for value in document["metadata"]["labels"].values():
            assert LABEL_VALUE.match(value) and len(value) <= 63, value
        assert document["metadata"]["annotations"][kubernetes.RUN_ID_ANNOTATION] == run_id
    for job in _jobs(documents):
        subpath = _replay_container(job)["volumeMounts"][0]["subPath"]
        folder, seed_folder = subpath.split("/")
        assert folder not in (".", "..") and LABEL_VALUE.match(folder), subpath
        assert seed_folder == f"seed-{job['metadata']['labels']['reprobox.dev/seed']}"


def test_run_ids_that_sanitise_alike_keep_different_names(sgd: Manifest) -> None:
    names = set()
    for run_id in ("run a", "run_a", "run-a", "x" * 100 + "1", "x" * 100 + "2"):
        (job,) = _jobs(_documents(sgd, run_id=run_id))
        names.add(job["metadata"]["name"])
    assert len(names) == 5
    assert kubernetes.dns_name("reprobox", "run-a", "seed-1") == "reprobox-run-a-seed-1"


# ---------------------------------------------------------------------------- resources


def test_gpus_go_in_limits_by_count() -> None:
    gpu = _manifest("torch-h100")
    plan = preflight.Preflight(gpu_count=1)
    (job,) = _jobs(_documents(gpu, _spec(gpu, plan=plan)))
    assert _replay_container(job)["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    by_id = dataclasses.replace(_spec(gpu), gpu_ids=("0", "2"), gpu_count=0)
    (job,) = _jobs(_documents(gpu, by_id))
    assert _replay_container(job)["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert "resources" not in _pod(job)["initContainers"][0]  # the copy needs no GPU


def test_a_cpu_replay_asks_for_no_resources(sgd: Manifest) -> None:
    (job,) = _jobs(_documents(sgd))
    assert "resources" not in _replay_container(job)


def test_memory_is_limited_in_kubernetes_units(sgd: Manifest) -> None:
    spec = dataclasses.replace(_spec(sgd, memory="8g"), gpu_count=1)
    (job,) = _jobs(_documents(sgd, spec))
    assert _replay_container(job)["resources"] == {
        "limits": {"memory": "8Gi", "nvidia.com/gpu": 1}}
    assert _pod(job)["initContainers"][0]["resources"] == {"limits": {"memory": "8Gi"}}


@pytest.mark.parametrize(("docker", "expected"), [
    ("8g", "8Gi"), ("8G", "8Gi"), ("8gb", "8Gi"), ("8GB", "8Gi"),
    ("512m", "512Mi"), ("1024m", "1Gi"), ("1.5g", "1536Mi"), ("0.5m", "512Ki"),
    ("100k", "100Ki"), ("1000", "1000"), ("1073741824", "1Gi"), ("1024b", "1Ki"),
    ("2049k", "2049Ki"), (" 4g ", "4Gi"),
])
def test_docker_memory_sizes_convert_exactly(docker: str, expected: str) -> None:
    converted = kubernetes.kubernetes_memory(docker)
    assert converted == expected and QUANTITY.match(converted)


@pytest.mark.parametrize("docker", ["", "g", "8t", "8 g", "-1g", "0", "0g", "1.3b", "0.1k",
                                    "8gi", "8Gi", "eight", "1e3m", "8bb"])
def test_memory_sizes_that_cannot_be_converted_are_refused(docker: str) -> None:
    with pytest.raises(UsageError, match="memory limit"):
        kubernetes.kubernetes_memory(docker)


# ---------------------------------------------------------------------------- seeds and env


def test_the_env_is_the_local_replays_sorted(sgd: Manifest) -> None:
    spec = _spec(sgd)
    (job,) = _jobs(_documents(sgd, spec))
    names = [item["name"] for item in _replay_container(job)["env"]]
    assert names == sorted(names)
    assert _env(job) == dict(spec.env)
    assert _env(job)["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert _env(job)["REPROBOX_SEED"] == "1234" == _env(job)["PYTHONHASHSEED"]


def test_one_job_per_seed_with_its_seed_and_the_same_flags(sgd: Manifest) -> None:
    spec = _spec(sgd)
    jobs = _jobs(_documents(sgd, spec, seeds=(None, 0, 99, seeding.MAX_SEED)))
    assert [job["metadata"]["labels"]["reprobox.dev/seed"] for job in jobs] == [
        "1234", "0", "99", str(seeding.MAX_SEED)]
    for job, seed in zip(jobs, (1234, 0, 99, seeding.MAX_SEED), strict=True):
        env = _env(job)
        assert env["REPROBOX_SEED"] == env["PYTHONHASHSEED"] == str(seed)
        others = {k: v for k, v in env.items() if k not in ("REPROBOX_SEED", "PYTHONHASHSEED")}
        assert others == {k: v for k, v in spec.env.items()
                          if k not in ("REPROBOX_SEED", "PYTHONHASHSEED")}
        assert job["metadata"]["name"] == f"reprobox-{RUN_ID.lower()}-seed-{seed}"
        assert _replay_container(job)["volumeMounts"][0]["subPath"] == f"{RUN_ID}/seed-{seed}"


@pytest.mark.parametrize("seeds", [(), (None, 1234), (5, 5), (-1,), (seeding.MAX_SEED + 1,),
                                   (True,)])
def test_bad_or_repeated_seeds_are_refused(seeds: tuple[Any, ...], sgd: Manifest) -> None:
    with pytest.raises(UsageError):
        _documents(sgd, seeds=seeds)


def test_a_masked_value_is_refused(sgd: Manifest) -> None:
    run = dataclasses.replace(sgd.run, env={**sgd.run.env,
                                            "HTTP_PROXY": f"http://{manifest.SECRET_MASK}@proxy"})
    masked = dataclasses.replace(sgd, run=run)
    with pytest.raises(ReplayError, match="environment variable HTTP_PROXY held a secret"):
        _documents(masked)
    spec = dataclasses.replace(_spec(sgd), argv=("python", "train.py", manifest.SECRET_MASK))
    with pytest.raises(ReplayError, match="the recorded command held a secret"):
        _documents(sgd, spec)


# ---------------------------------------------------------------------------- YAML


def test_the_yaml_round_trips_and_is_deterministic(sgd: Manifest) -> None:
    inputs = (FileRecord("data/in.csv", "cd" * 32, 5),)
    documents = _documents(dataclasses.replace(sgd, inputs=inputs), seeds=(None, 7))
    text = kubernetes.to_yaml(documents)
    fresh = dataclasses.replace(_manifest("numpy-sgd"), inputs=inputs)
    again = kubernetes.to_yaml(_documents(fresh, seeds=(None, 7)))
    assert text == again
    assert list(yaml.safe_load_all(text)) == documents
    assert text.count("\n---\n") == len(documents)
    # values YAML 1.1 would read as numbers or booleans stay strings
    (job, _) = _jobs(list(yaml.safe_load_all(text)))
    assert _env(job)["OMP_NUM_THREADS"] == "1"
    assert next(iter(yaml.safe_load_all(text)))["kind"] == "NetworkPolicy"  # keys in order
    assert text.index("apiVersion:") < text.index("kind:") < text.index("metadata:")


def test_the_header_says_how_to_apply_and_fetch(sgd: Manifest) -> None:
    with_input = dataclasses.replace(sgd, inputs=(FileRecord("data/in.csv", "cd" * 32, 5),))
    options = KubernetesOptions(namespace="ml", claim="lab-out")
    text = kubernetes.to_yaml(_documents(with_input, seeds=(None, 7), options=options))
    header = text.split("---\n", 1)[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"run {RUN_ID}" in header and "2 Job(s)" in header
    assert "kubectl -n ml apply -f THIS_FILE" in header
    assert "'lab-out' must exist in namespace ml" in header
    assert f"reprobox-{RUN_ID.lower()}-seed-7: {RUN_ID}/seed-7/" in header
    assert (f"kubectl -n ml cp reprobox-fetch:/claims/outputs/{RUN_ID}/seed-1234 "
            f"./reprobox-{RUN_ID.lower()}-seed-1234") in header
    assert "'reprobox-inputs'" in header and "      data/in.csv" in header
    assert "root must be writable by uid 1000 or gid 1000" in header
    assert "fsGroupChangePolicy" in header and "fsGroupPolicy File" in header
    assert ("kubectl -n ml exec reprobox-fetch -- sh -c "
            "'chgrp 1000 /claims/outputs && chmod g+rwxs /claims/outputs'") in header
    overrides = re.search(r"--overrides='([^']*)'", header)
    assert overrides is not None
    fetch_pod = yaml.safe_load(overrides.group(1))
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in fetch_pod["spec"]["volumes"]}
    assert claims == {"inputs": "reprobox-inputs", "outputs": "lab-out"}
