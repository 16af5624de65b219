"""A replay as Kubernetes manifests: one hardened `batch/v1` Job per seed, as YAML to apply.

Pure and deterministic: the same manifest, container spec, image and options give the same
documents and the same bytes. The Jobs carry what a local replay has (the image by digest, the
seed and determinism env, GPUs, the hardening of `engine._create_kwargs`), written the way a
cluster needs it: the project copied onto a claim by an init container, so the outputs outlive
the pod, and the declared inputs mounted read-only from another claim.

The init container mounts the claim's root and makes the job's folder itself, as the run's user:
a `subPath` the kubelet finds missing is made by root, after any fsGroup change
(kubernetes/kubernetes#41638), and the user could not write in it. The replay container mounts
that folder by `subPath`, which then exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from reprobox import render, seeding
from reprobox.engine import ContainerSpec, memory_bytes
from reprobox.errors import ManifestError, ReplayError, UsageError
from reprobox.manifest import SECRET_MASK, FileRecord, Manifest

DEFAULT_CLAIM = "reprobox-outputs"
DEFAULT_INPUTS_CLAIM = "reprobox-inputs"
DEFAULT_NAME_PREFIX = "reprobox"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_ID_LABEL = "reprobox.dev/run-id"
SEED_LABEL = "reprobox.dev/seed"
RUN_ID_ANNOTATION = "reprobox.dev/run-id"  # the exact id; the label is sanitised
IMAGE_ANNOTATION = "reprobox.dev/built-as"
CLAIM_DIR = "/claim"  # where the init container sees the root of the outputs claim
MAX_NAME = 63  # a Job's name becomes a label value on its pods
_MAX_PREFIX = 20
_HASH_CHARS = 6

_DIGEST_REF = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]+)?/)?"  # registry host[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # an optional tag, which the digest overrides
    r"@sha256:[0-9a-f]{64}$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
# Docker's memory units (docker-py's parse_bytes) are binary: 1g = 1024**3 bytes.
_KUBERNETES_UNITS = ((3, "Gi"), (2, "Mi"), (1, "Ki"))
_PUSH_HINT = ("push the image and pin it by digest: `docker tag {tag} REGISTRY/NAME && docker "
              "push REGISTRY/NAME`, then pass `--image REGISTRY/NAME@sha256:...` (the digest "
              "`docker push` prints)")
# Refuses to overwrite an earlier attempt's files: stale outputs would pass for this run's.
_COPY_PROJECT = (
    'mkdir -p {folder} || {{ echo "reprobox: cannot make {path} on the outputs claim: the '
    'folders above it must be writable by uid {uid} or gid {gid}" >&2; exit 1; }}; '
    'if [ -n "$(ls -A {folder})" ]; then '
    'echo "reprobox: {path} on the outputs claim is not empty: '
    'an earlier attempt left files there; move them away first" >&2; exit 1; fi; '
    "cp -a {project}/. {folder}/"
)


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """Where the Jobs run and which claims they use; the defaults suit one namespace."""

    claim: str = DEFAULT_CLAIM  # PersistentVolumeClaim the outputs are written to
    inputs_claim: str = DEFAULT_INPUTS_CLAIM  # PersistentVolumeClaim holding the declared inputs
    namespace: str | None = None  # None: the namespace kubectl is pointed at
    node_selector: Mapping[str, str] = field(default_factory=dict)  # e.g. the GPU product label
    name_prefix: str = DEFAULT_NAME_PREFIX
    cpu: str | None = None  # a CPU request ("4", "500m"); None asks for none
    network_policy: bool = True  # a NetworkPolicy denying all traffic, as `--network none`


def check_digest_ref(ref: str, local_tag: str = "<local tag>") -> str:
    """`ref` when it names an image by digest (`name[:tag]@sha256:<64 hex>`); else UsageError."""
    if not _DIGEST_REF.match(ref):
        raise UsageError(
            f"image {ref!r} is not pinned by digest: a tag can move to other content, and the "
            "cluster would replay whatever it names then",
            hint=_PUSH_HINT.format(tag=local_tag),
        )
    return ref


def job_documents(manifest: Manifest, spec: ContainerSpec, run_id: str, image_ref: str,
                  seeds: Sequence[int | None], options: KubernetesOptions) -> list[dict[str, Any]]:
    """One Job per seed (None: the captured one), led by a NetworkPolicy when options ask."""
    image = check_digest_ref(image_ref, spec.image)
    _check_options(options)
    _refuse_masked(spec)
    documents = [_job(manifest, spec, run_id, image, seed, options)
                 for seed in _resolved_seeds(manifest, seeds)]
    if options.network_policy:
        documents.insert(0, _network_policy(run_id, options))
    return documents


def to_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    """The documents as one multi-document YAML file, led by a comment on how to use it."""
    bodies = [yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, width=120)
              for doc in documents]
    return _header(documents) + "".join(f"---\n{body}" for body in bodies)


def kubernetes_memory(docker_memory: str) -> str:
    """A Docker memory limit ("8g", "512m", "1.5g", "1073741824") in Kubernetes units ("8Gi")."""
    size = memory_bytes(docker_memory)
    for power, suffix in _KUBERNETES_UNITS:
        if size % 1024**power == 0:
            return f"{size // 1024**power}{suffix}"
    return str(size)


# ---------------------------------------------------------------------------- names and checks


def dns_name(prefix: str, run_id: str, suffix: str) -> str:
    """`<prefix>-<run id>-<suffix>` as a DNS-1123 label: lowercase, at most 63 characters.

    A run id that had to be changed (other than lowercased) or cut to fit gets a hash of the
    whole id, so ids that differ only where they were changed still give different names.
    """
    room = MAX_NAME - len(prefix) - len(suffix) - 2
    run = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    if len(run) > room or run != run_id.lower():  # only lowercasing keeps ids apart unhashed
        run = f"{run[: room - _HASH_CHARS - 1].rstrip('-')}-{_short_hash(run_id)}".lstrip("-")
    return f"{prefix}-{run}-{suffix}"


def label_value(text: str) -> str:
    """`text` made a valid label value (and a safe path segment): at most 63 characters."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    value = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)
    if len(value) > MAX_NAME or value != text:
        value = f"{value[: MAX_NAME - _HASH_CHARS - 1].rstrip('-_.')}-{_short_hash(text)}"
    return value.lstrip("-")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]


def _check_options(options: KubernetesOptions) -> None:
    prefix = options.name_prefix
    if not _DNS_LABEL.match(prefix) or len(prefix) > _MAX_PREFIX:
        raise UsageError(f"name prefix {prefix!r} is not a lowercase DNS label of at most "
                         f"{_MAX_PREFIX} characters", hint="letters, digits and '-', e.g. reprobox")
    for what, name in (("claim", options.claim), ("inputs claim", options.inputs_claim)):
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise UsageError(f"{what} {name!r} is not a valid PersistentVolumeClaim name",
                             hint="lowercase letters, digits, '-' and '.'")
    if options.namespace is not None and not (
            _DNS_LABEL.match(options.namespace) and len(options.namespace) <= MAX_NAME):
        raise UsageError(f"namespace {options.namespace!r} is not a valid namespace name",
                         hint="lowercase letters, digits and '-', at most 63 characters")
    if options.cpu is not None and not _QUANTITY.match(options.cpu):
        raise UsageError(f"CPU request {options.cpu!r} is not a Kubernetes quantity",
                         hint="whole CPUs (4) or millicores (500m)")
    _check_node_selector(options.node_selector)


def _check_node_selector(selector: Mapping[str, str]) -> None:
    for key, value in selector.items():
        prefix, _, name = key.rpartition("/")
        valid_key = (bool(name) and len(name) <= MAX_NAME and bool(_LABEL_VALUE.match(name))
                     and (not prefix or bool(_DNS_SUBDOMAIN.match(prefix))))
        if not valid_key or len(value) > MAX_NAME or not _LABEL_VALUE.match(value):
            raise UsageError(f"node selector {key}={value!r} is not a valid node label",
                             hint="copy it from `kubectl get nodes --show-labels`")


def _refuse_masked(spec: ContainerSpec) -> None:
    """A value reprobox masked at capture is not the run's value: the Job would differ."""
    masked = sorted(name for name, value in spec.env.items() if SECRET_MASK in value)
    if masked or any(SECRET_MASK in arg for arg in spec.argv):
        where = f"environment variable {masked[0]}" if masked else "the recorded command"
        raise ReplayError(f"{where} held a secret, which reprobox never stores",
                          hint="let the script read the secret from the cluster (a Secret "
                          "mounted by hand), not from the captured command or environment")


def _resolved_seeds(manifest: Manifest, seeds: Sequence[int | None]) -> list[int | None]:
    captured = manifest.determinism.seed
    return [None if seed == captured else seed
            for seed in seeding.resolved_seeds(seeds, captured)]


# ---------------------------------------------------------------------------- documents


def _labels(run_id: str, seed: int | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "reprobox", RUN_ID_LABEL: label_value(run_id)}
    if seed is not None:
        labels[SEED_LABEL] = str(seed)
    return labels


def _metadata(name: str, labels: Mapping[str, str], options: KubernetesOptions,
              annotations: Mapping[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if options.namespace is not None:
        metadata["namespace"] = options.namespace
    metadata["labels"] = dict(labels)
    metadata["annotations"] = dict(annotations)
    return metadata


def _network_policy(run_id: str, options: KubernetesOptions) -> dict[str, Any]:
    """No traffic in or out of the run's pods: `--network none`, where the network enforces it."""
    name = dns_name(options.name_prefix, run_id, "no-network")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(name, _labels(run_id), options, {RUN_ID_ANNOTATION: run_id}),
        "spec": {"podSelector": {"matchLabels": _labels(run_id)},
                 "policyTypes": ["Ingress", "Egress"]},
    }


def _job(manifest: Manifest, spec: ContainerSpec, run_id: str, image: str, seed: int | None,
         options: KubernetesOptions) -> dict[str, Any]:
    actual = manifest.determinism.seed if seed is None else seed
    labels = _labels(run_id, actual)
    annotations = {IMAGE_ANNOTATION: spec.image, RUN_ID_ANNOTATION: run_id}
    job_spec: dict[str, Any] = {"backoffLimit": 0}  # a failed replay is a result, not a retry
    if spec.timeout_s is not None:
        job_spec["activeDeadlineSeconds"] = max(1, math.ceil(spec.timeout_s))
    job_spec["template"] = {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": _pod_spec(manifest, spec, image, _output_path(run_id, actual), seed, options),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(dns_name(options.name_prefix, run_id, f"seed-{actual}"), labels,
                              options, annotations),
        "spec": job_spec,
    }


def _output_path(run_id: str, seed: int) -> str:
    """Where one job's project folder lies on the outputs claim."""
    return f"{label_value(run_id)}/seed-{seed}"


def _pod_spec(manifest: Manifest, spec: ContainerSpec, image: str, output_path: str,
              seed: int | None, options: KubernetesOptions) -> dict[str, Any]:
    project = spec.writable_dir or render.PROJECT_DIR
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The pause process becomes PID 1 and reaps zombies, as `docker run --init` does.
        "shareProcessNamespace": True,
        "securityContext": _pod_security(spec.user),
    }
    if options.node_selector:
        pod["nodeSelector"] = dict(sorted(options.node_selector.items()))
    pod["initContainers"] = [_copy_container(spec, image, project, output_path)]
    pod["containers"] = [_replay_container(manifest, spec, image, project, output_path, seed,
                                           options)]
    pod["volumes"] = _volumes(manifest, options)
    return pod


def _copy_container(spec: ContainerSpec, image: str, project: str,
                    output_path: str) -> dict[str, Any]:
    """Copies the image's project folder onto the claim: an empty volume at /app would hide it.

    It mounts the claim's root, not a `subPath`: see the module's docstring.
    """
    container: dict[str, Any] = {
        "name": "copy-project",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", _copy_command(spec.user, project, output_path)],
    }
    if spec.memory:  # a namespace's quota may ask every container for a limit
        container["resources"] = {"limits": {"memory": kubernetes_memory(spec.memory)}}
    container["securityContext"] = _container_security(spec.user)
    container["volumeMounts"] = [{"name": "outputs", "mountPath": CLAIM_DIR}]
    return container


def _copy_command(user: str, project: str, output_path: str) -> str:
    """Make the job's folder on the claim as the run's user, refuse it if used, fill it."""
    uid, gid = _user_ids(user)
    folder = shlex.quote(f"{CLAIM_DIR}/{output_path}")
    return _COPY_PROJECT.format(folder=folder, path=output_path, uid=uid, gid=gid,
                                project=shlex.quote(project))


def _replay_container(manifest: Manifest, spec: ContainerSpec, image: str, project: str,
                      output_path: str, seed: int | None,
                      options: KubernetesOptions) -> dict[str, Any]:
    env = _seeded_env(spec.env, seed)
    container: dict[str, Any] = {
        "name": "replay",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.argv),
        "workingDir": spec.workdir,
        "env": [{"name": name, "value": value} for name, value in sorted(env.items())],
    }
    resources = _resources(spec, options)
    if resources:
        container["resources"] = resources
    container["securityContext"] = _container_security(spec.user)
    mounts = [{"name": "outputs", "mountPath": project, "subPath": output_path},
              {"name": "tmp", "mountPath": "/tmp"}]
    mounts += [_input_mount(record, project) for record in manifest.inputs]
    container["volumeMounts"] = mounts
    return container


def _seeded_env(env: Mapping[str, str], seed: int | None) -> dict[str, str]:
    """`env` started from another seed: the seed's variables changed, nothing else."""
    return dict(env) if seed is None else {**env, **seeding.seed_env(seed)}


def _resources(spec: ContainerSpec, options: KubernetesOptions) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if spec.memory:
        limits["memory"] = kubernetes_memory(spec.memory)
    gpus = spec.gpu_count or len(spec.gpu_ids)  # a cluster picks the devices, not the spec
    if gpus:
        limits[GPU_RESOURCE] = gpus  # GPUs go in limits only
    resources: dict[str, Any] = {}
    if options.cpu is not None:
        resources["requests"] = {"cpu": options.cpu}
    if limits:
        resources["limits"] = limits
    return resources


def _input_mount(record: FileRecord, project: str) -> dict[str, Any]:
    path = PurePosixPath(record.path)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ManifestError(f"input {record.path!r} is not a path inside the project",
                            hint="inputs are recorded relative to the project root")
    return {"name": "inputs", "mountPath": f"{project}/{path}", "subPath": str(path),
            "readOnly": True}


def _volumes(manifest: Manifest, options: KubernetesOptions) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "outputs", "persistentVolumeClaim": {"claimName": options.claim}},
        {"name": "tmp", "emptyDir": {}},  # the root is read-only
    ]
    if manifest.inputs:
        volumes.append({"name": "inputs", "persistentVolumeClaim": {
            "claimName": options.inputs_claim, "readOnly": True}})
    return volumes


def _user_ids(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0:
        raise UsageError(f"container user {user!r} is not a numeric non-root uid:gid",
                         hint="Kubernetes checks runAsNonRoot by number, e.g. 1000:1000")
    return int(uid), int(gid)


def _pod_security(user: str) -> dict[str, Any]:
    uid, gid = _user_ids(user)
    # The claim holds every run's folders: change their group once, not on every pod start.
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security(user: str) -> dict[str, Any]:
    uid, gid = _user_ids(user)
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "privileged": False,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


# ---------------------------------------------------------------------------- the header


def _header(documents: Sequence[Mapping[str, Any]]) -> str:
    jobs = [doc for doc in documents if doc.get("kind") == "Job"]
    if not jobs:
        return "# reprobox: no replay Jobs\n"
    first = jobs[0]
    pod = first["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    namespace = first["metadata"].get("namespace")
    ns = f" -n {namespace}" if namespace else ""
    run_id = first["metadata"]["annotations"][RUN_ID_ANNOTATION]
    selector = f"{RUN_ID_LABEL}={first['metadata']['labels'][RUN_ID_LABEL]}"
    lines = [
        f"reprobox replay of run {run_id} on Kubernetes: {len(jobs)} Job(s), one per seed.",
        "Written by `reprobox export kubernetes`; the same bundle and options give the same "
        "bytes.",
        "",
        "Before applying:",
        f"  - the PersistentVolumeClaim {claims['outputs']!r} must exist{_in(namespace)} "
        "(ReadWriteMany, or ReadWriteOnce",
        "    when all the pods land on one node); each Job writes its copy of the project "
        "there:",
        *[f"      {_name(job)}: {_output_subpath(job)}/" for job in jobs],
        "    a folder that already holds files (an earlier attempt) stops the Job: move it "
        "away first.",
        *_claim_root_lines(pod["securityContext"], ns),
        *_input_lines(first, claims),
        "",
        f"Apply:    kubectl{ns} apply -f THIS_FILE",
        f"Watch:    kubectl{ns} get jobs -l {selector}; kubectl{ns} logs job/{_name(first)}",
        "Outputs:  the files the run wrote, and .reprobox-state/ (the seeding state), are in "
        "each Job's folder",
        "          on the claim. To copy them here, start a pod that mounts the claim, then "
        "`kubectl cp`:",
        f"  kubectl{ns} run reprobox-fetch --image=busybox:1.36 --restart=Never "
        f"--overrides='{_fetch_overrides(claims)}'",
        *[f"  kubectl{ns} cp reprobox-fetch:/claims/outputs/{_output_subpath(job)} "
          f"./{_name(job)}" for job in jobs],
        f"  kubectl{ns} delete pod reprobox-fetch",
        "",
        "Unlike a local replay: GPUs are asked for by count (the cluster picks the devices); "
        "the pids limit is",
        "the kubelet's; the NetworkPolicy cuts the network only where the cluster's network "
        "plugin enforces it.",
    ]
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def _in(namespace: str | None) -> str:
    return f" in namespace {namespace}" if namespace else ""


def _name(job: Mapping[str, Any]) -> str:
    return str(job["metadata"]["name"])


def _output_subpath(job: Mapping[str, Any]) -> str:
    (replay,) = job["spec"]["template"]["spec"]["containers"]
    return next(str(m["subPath"]) for m in replay["volumeMounts"] if m["name"] == "outputs")


def _claim_root_lines(security: Mapping[str, Any], ns: str) -> list[str]:
    """Each Job makes its folder as the run's user, so that user must be able to write there."""
    uid, gid = security["runAsUser"], security["fsGroup"]
    return [
        f"    The claim's root must be writable by uid {uid} or gid {gid}. The kubelet makes "
        f"it so (fsGroup {gid}; fsGroupChangePolicy",
        "    OnRootMismatch changes the volume only while its root's group and mode differ) "
        "where the volume takes fsGroup:",
        "    ReadWriteOnce with an fsType, or a CSI driver with fsGroupPolicy File. Elsewhere "
        "(NFS, most ReadWriteMany",
        "    claims) do it once as root, e.g. with the reprobox-fetch pod below (an NFS export "
        "that squashes root needs",
        f"    its admin): kubectl{ns} exec reprobox-fetch -- sh -c "
        f"'chgrp {gid} /claims/outputs && chmod g+rwxs /claims/outputs'",
    ]


def _input_lines(job: Mapping[str, Any], claims: Mapping[str, str]) -> list[str]:
    (replay,) = job["spec"]["template"]["spec"]["containers"]
    paths = [m["subPath"] for m in replay["volumeMounts"] if m["name"] == "inputs"]
    if not paths:
        return []
    return [f"  - the declared inputs must be on the claim {claims['inputs']!r}, at their "
            "paths in the project",
            "    (the pod below mounts it at /claims/inputs for `kubectl cp`); they are "
            "mounted read-only:",
            *[f"      {path}" for path in paths]]


def _fetch_overrides(claims: Mapping[str, str]) -> str:
    """A pod that mounts the run's claims under /claims, for `kubectl cp` in and out."""
    names = sorted(claims)
    pod = {"spec": {
        "containers": [{"name": "reprobox-fetch", "image": "busybox:1.36",
                        "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": n, "mountPath": f"/claims/{n}"}
                                         for n in names]}],
        "volumes": [{"name": n, "persistentVolumeClaim": {"claimName": claims[n]}}
                    for n in names]}}
    return json.dumps(pod, separators=(",", ":"))
