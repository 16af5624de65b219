"""`reprobox export slurm|kubernetes|apptainer`: a bundle → the files those engines read.

Nothing is submitted or built: these are for clusters reprobox cannot reach from here. Each
export holds the replay as a local replay would run it (the same image, command, seed, flags
and hardening, as far as the engine allows); the files name what they cannot carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from reprobox import preflight
from reprobox.build import BuiltImage, read_built
from reprobox.bundle import Bundle
from reprobox.cluster import apptainer, kubernetes
from reprobox.cluster.slurm_replay import image_tar_path
from reprobox.cluster.slurm_script import JobFiles, SlurmOptions, batch_script
from reprobox.engine import ContainerSpec
from reprobox.errors import UsageError
from reprobox.replay import DEFAULT_TIMEOUT_S, container_spec, fetched_paths, input_mounts

TARGETS = ("slurm", "kubernetes", "apptainer")


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export and how the job should run."""

    target: str
    seeds: tuple[int, ...] = ()  # none: the captured seed
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    kubernetes: kubernetes.KubernetesOptions = field(
        default_factory=kubernetes.KubernetesOptions)
    image_ref: str | None = None  # Kubernetes: the pushed image, by digest
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory: str | None = None
    cpu: bool = False


def export(bundle: Bundle, request: ExportRequest) -> dict[str, str]:
    """The files of the export, by name (relative): one file, or a few for Apptainer."""
    if request.target not in TARGETS:
        raise UsageError(f"export target {request.target!r} is not one of {', '.join(TARGETS)}",
                         hint="reprobox export slurm|kubernetes|apptainer")
    manifest = bundle.manifest()
    built = read_built(bundle)
    plan = preflight.for_scheduler(manifest, request.slurm.gpus, request.cpu)
    spec = container_spec(manifest, built, input_mounts(bundle, manifest), request.timeout_s,
                          request.memory, plan)
    seeds = request.seeds or (manifest.determinism.seed,)
    if request.target == "slurm":
        return {f"{bundle.run_id}.slurm.sh": _slurm(bundle, built, spec, seeds, request,
                                                     plan.gpu_count)}
    if request.target == "kubernetes":
        return {f"{bundle.run_id}.k8s.yaml": _kubernetes(bundle, built, spec, seeds, request)}
    return apptainer.export_text(manifest, spec, bundle.run_id, list(seeds))


def _slurm(bundle: Bundle, built: BuiltImage, spec: ContainerSpec, seeds: Sequence[int],
           request: ExportRequest, gpus: int) -> str:
    image_tar = image_tar_path(bundle, built)
    work = bundle.jobs_dir.resolve() / "export"
    files = JobFiles(str(work), str(image_tar), str(image_tar.with_suffix(".sif")),
                     log_pattern=f"reprobox-{bundle.run_id}-%A_%a.out")
    options = replace(request.slurm, gpus=gpus)
    return batch_script(bundle.manifest(), bundle.run_id, spec, seeds, options, files,
                        fetched_paths(bundle.manifest()))


def _kubernetes(bundle: Bundle, built: BuiltImage, spec: ContainerSpec, seeds: Sequence[int],
                request: ExportRequest) -> str:
    if request.image_ref is None:
        raise UsageError("export kubernetes needs --image REGISTRY/NAME@sha256:...",
                         hint=f"push {built.tag} to a registry your cluster pulls from "
                         "and pass the pushed image by digest")
    image = kubernetes.check_digest_ref(request.image_ref, built.tag)
    documents = kubernetes.job_documents(bundle.manifest(), spec, bundle.run_id, image,
                                         list(seeds), request.kubernetes)
    return kubernetes.to_yaml(documents)
