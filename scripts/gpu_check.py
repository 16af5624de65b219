#!/usr/bin/env python3
"""On a GPU machine: record what the real tools say, and show that reprobox's flags make CUDA
deterministic.

    python scripts/gpu_check.py [OUT_DIR]

1. records the raw output of nvidia-smi (several forms), NVML (through nvidia-ml-py) and torch
   into OUT_DIR/fixtures/, the test fixtures of the unit tier;
2. runs an `index_add_`/`scatter_add_` program in float32 twice as it is and twice under the
   reprobox shim (seed and deterministic flags injected): the plain runs differ, the shimmed ones
   are bit-identical;
3. runs a few ops that have no deterministic CUDA kernel under warn-only mode, to record which fire;
4. captures examples/torch-gpu with `reprobox capture` and runs `reprobox doctor` on the bundle;
5. runs the GPU tier (tests/gpu), which skips itself where there is no GPU.

Every step is independent: one that fails is reported and the next one runs. Exit code 0 when
the determinism check came out as expected, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SMI_QUERY = "index,name,uuid,memory.total,compute_cap,mig.mode.current,pci.bus_id,driver_version"
SMI_FORMS = {
    "nvidia-smi.txt": ["nvidia-smi"],
    "nvidia-smi-q.txt": ["nvidia-smi", "-q"],
    "nvidia-smi-q.xml": ["nvidia-smi", "-q", "-x"],
    "nvidia-smi-L.txt": ["nvidia-smi", "-L"],
    "nvidia-smi-version.txt": ["nvidia-smi", "--version"],
    "nvidia-smi-query.csv": ["nvidia-smi", f"--query-gpu={SMI_QUERY}",
                             "--format=csv,noheader,nounits"],
    "nvidia-smi-query-header.csv": ["nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv"],
    "nvidia-smi-query-badfield.txt": ["nvidia-smi", "--query-gpu=index,no_such_field",
                                      "--format=csv,noheader,nounits"],
}

NONDETERMINISTIC_OPS = r"""
import hashlib, sys, torch
torch.manual_seed(0)  # the same inputs in every run: only the order of the additions can differ
n, bins = 1 << 22, 1 << 10
src = torch.randn(n, device="cuda")
index = torch.randint(0, bins, (n,), device="cuda")
a = torch.zeros(bins, device="cuda").index_add_(0, index, src)
b = torch.zeros(bins, device="cuda").scatter_add_(0, index, src)
digest = hashlib.sha256(a.cpu().numpy().tobytes() + b.cpu().numpy().tobytes()).hexdigest()
print(digest[:16], torch.are_deterministic_algorithms_enabled(),
      repr(__import__("os").environ.get("CUBLAS_WORKSPACE_CONFIG")))
"""

NO_DETERMINISTIC_KERNEL = r"""
import json, warnings, torch
torch.use_deterministic_algorithms(True, warn_only=True)
x = torch.rand(1 << 16, device="cuda")
fired = {}
ops = {
    "histc": lambda: torch.histc(x, bins=10),
    "bincount_weights": lambda: torch.bincount((x * 10).long(), weights=x),
    "kthvalue": lambda: torch.kthvalue(x, 3),
    "median_dim": lambda: torch.median(x.view(256, 256), dim=1),
    "interpolate_backward": lambda: torch.nn.functional.interpolate(
        x.view(1, 1, 256, 256).requires_grad_(), scale_factor=2, mode="bilinear").sum().backward(),
}
for name, op in ops.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op()
        torch.cuda.synchronize()
    fired[name] = [str(w.message) for w in caught]
torch.use_deterministic_algorithms(True)
try:
    torch.histc(x, bins=10)
    fired["strict_error"] = None
except RuntimeError as exc:
    fired["strict_error"] = str(exc)
print(json.dumps(fired, indent=1))
"""


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-check-out").resolve()
    fixtures = out / "fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("nvidia-smi", lambda: record_nvidia_smi(fixtures)),
        ("nvml", lambda: record_nvml(fixtures)),
        ("torch", lambda: record_torch(fixtures)),
        ("packages", lambda: record_packages(fixtures)),
        ("determinism", lambda: determinism_check(out)),
        ("warn_only", lambda: warn_only_ops(fixtures)),
        ("capture", lambda: capture_example(out)),
        ("gpu_tests", lambda: gpu_tests(out)),
    ]
    for name, step in steps:
        started = time.monotonic()
        try:
            results[name] = step()
        except Exception as exc:  # noqa: BLE001 - one failed step must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"== {name} ({time.monotonic() - started:.1f} s): "
              f"{json.dumps(results[name], default=str)[:1500]}", flush=True)
    (out / "summary.json").write_text(json.dumps(results, indent=1, default=str))
    verdict = results.get("determinism", {})
    return 0 if isinstance(verdict, dict) and verdict.get("as_expected") else 1


def run(argv: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)


def record_nvidia_smi(fixtures: Path) -> dict[str, Any]:
    if shutil.which("nvidia-smi") is None:
        return {"nvidia-smi": "not on PATH"}
    answers = {}
    for name, argv in SMI_FORMS.items():
        result = run(argv, timeout=30)
        (fixtures / name).write_text(result.stdout + result.stderr)
        answers[name] = result.returncode
    return answers


def record_nvml(fixtures: Path) -> dict[str, Any]:
    import pynvml  # nvidia-ml-py

    def ask(function: str, *args: Any) -> Any:
        try:
            value = getattr(pynvml, function)(*args)
        except Exception as exc:  # noqa: BLE001 - the error is the recorded answer
            return {"error": type(exc).__name__, "message": str(exc)}
        if hasattr(value, "_fields_"):
            return {field[0]: _plain(getattr(value, field[0])) for field in value._fields_}
        return _plain(value)

    pynvml.nvmlInit()
    try:
        dump: dict[str, Any] = {
            "nvmlSystemGetDriverVersion": ask("nvmlSystemGetDriverVersion"),
            "nvmlSystemGetCudaDriverVersion": ask("nvmlSystemGetCudaDriverVersion"),
            "nvmlSystemGetCudaDriverVersion_v2": ask("nvmlSystemGetCudaDriverVersion_v2"),
            "nvmlSystemGetNVMLVersion": ask("nvmlSystemGetNVMLVersion"),
            "nvmlDeviceGetCount": ask("nvmlDeviceGetCount"),
            "devices": [],
        }
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            dump["devices"].append({function: ask(function, handle) for function in (
                "nvmlDeviceGetIndex", "nvmlDeviceGetName", "nvmlDeviceGetUUID",
                "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetCudaComputeCapability",
                "nvmlDeviceGetMigMode", "nvmlDeviceGetPciInfo", "nvmlDeviceGetArchitecture",
                "nvmlDeviceGetBrand", "nvmlDeviceGetComputeMode", "nvmlDeviceGetPersistenceMode",
                "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetSerial",
            )})
    finally:
        pynvml.nvmlShutdown()
    dump["nvidia_ml_py"] = _version_of("nvidia-ml-py")
    (fixtures / "nvml.json").write_text(json.dumps(dump, indent=1))
    return {"devices": len(dump["devices"]), "driver": dump["nvmlSystemGetDriverVersion"]}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _version_of(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def record_torch(fixtures: Path) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {
        "torch.__version__": torch.__version__,
        "torch.version.cuda": torch.version.cuda,
        "torch.version.git_version": torch.version.git_version,
        "cudnn.version": torch.backends.cudnn.version(),
        "cuda.is_available": torch.cuda.is_available(),
        "cuda.device_count": torch.cuda.device_count(),
        "defaults": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn.deterministic": torch.backends.cudnn.deterministic,
            "cudnn.benchmark": torch.backends.cudnn.benchmark,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["device0"] = {"name": props.name, "total_memory": props.total_memory,
                            "capability": [props.major, props.minor],
                            "multi_processor_count": props.multi_processor_count,
                            "uuid": str(getattr(props, "uuid", None))}
        facts["nccl.version"] = list(torch.cuda.nccl.version())
    version_py = Path(torch.__file__).parent / "version.py"
    (fixtures / "torch-version.py.txt").write_text(version_py.read_text())
    (fixtures / "torch.json").write_text(json.dumps(facts, indent=1, default=str))
    return facts


def record_packages(fixtures: Path) -> dict[str, Any]:
    from importlib import metadata

    listing = sorted({(d.metadata["Name"], d.version) for d in metadata.distributions()
                      if d.metadata["Name"]})
    cuda_related = [f"{n}=={v}" for n, v in listing
                    if any(k in n.lower() for k in ("nvidia", "cuda", "cupy", "jax", "torch",
                                                    "tensorflow", "triton", "cudnn"))]
    (fixtures / "packages.json").write_text(json.dumps(listing, indent=1))
    probe = run([sys.executable, "-I", str(REPO / "reprobox/capture/interpreter_probe.py")])
    (fixtures / "interpreter-probe.json").write_text(probe.stdout + probe.stderr)
    return {"count": len(listing), "cuda_related": cuda_related, "probe_rc": probe.returncode}


def determinism_check(out: Path) -> dict[str, Any]:
    program = out / "nondeterministic_ops.py"
    program.write_text(NONDETERMINISTIC_OPS)
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("REPROBOX_")}
    plain_env.pop("CUBLAS_WORKSPACE_CONFIG", None)
    shim_env = dict(plain_env, PYTHONPATH=str(REPO / "reprobox" / "shim"), REPROBOX_SEED="42",
                    REPROBOX_DETERMINISTIC="1", PYTHONHASHSEED="42")
    try:  # the env reprobox itself builds, when reprobox imports here
        sys.path.insert(0, str(REPO))
        from reprobox import seeding

        shim_env = seeding.process_env(seeding.determinism(42), str(seeding.SHIM_DIR), None,
                                       plain_env)
    except Exception as exc:  # noqa: BLE001 - fall back to the hand-made env above
        print(f"   (reprobox.seeding unavailable: {exc}; using the shim env by hand)")
    plain = [run([sys.executable, str(program)], env=plain_env).stdout.strip() for _ in range(2)]
    shimmed = [run([sys.executable, str(program)], env=shim_env).stdout.strip() for _ in range(2)]
    return {"plain": plain, "shimmed": shimmed,
            "as_expected": plain[0] != plain[1] and shimmed[0] == shimmed[1] and bool(shimmed[0])}


def warn_only_ops(fixtures: Path) -> Any:
    result = run([sys.executable, "-c", NO_DETERMINISTIC_KERNEL], timeout=120)
    (fixtures / "torch-warn-only.json").write_text(result.stdout + result.stderr)
    return json.loads(result.stdout) if result.returncode == 0 else result.stderr[-1500:]


def capture_example(out: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="torch-gpu-"))
    shutil.copytree(REPO / "examples" / "torch-gpu", work, dirs_exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if shutil.which("git"):
        for argv in (["git", "init", "-q"], ["git", "add", "."],
                     ["git", "-c", "user.name=gpu", "-c", "user.email=gpu@localhost",
                      "commit", "-qm", "torch-gpu"]):
            run(argv, cwd=work)
    reprobox = [sys.executable, "-m", "reprobox"]
    captured = run([*reprobox, "capture", "--seed", "42", "--", sys.executable, "train.py"],
                   cwd=work, env=env, timeout=300)
    answers: dict[str, Any] = {"capture_rc": captured.returncode,
                               "capture_tail": (captured.stdout + captured.stderr)[-800:]}
    manifests = sorted(work.glob(".reprobox/runs/*/manifest.yaml"))
    if manifests:
        shutil.copy(manifests[-1], out / "fixtures" / "torch-gpu-manifest.yaml")
        doctor = run([*reprobox, "doctor", str(manifests[-1].parent)], cwd=work, env=env)
        (out / "fixtures" / "doctor.txt").write_text(doctor.stdout + doctor.stderr)
        answers["doctor_rc"] = doctor.returncode
    return answers


def gpu_tests(out: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # tests/gpu alone: the other tiers need docker, which a GPU machine may not have
    result = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                  str(REPO / "tests" / "gpu")], cwd=REPO, env=env, timeout=400)
    (out / "gpu-tests.txt").write_text(result.stdout + result.stderr)
    return {"rc": result.returncode, "tail": result.stdout[-600:]}


if __name__ == "__main__":
    sys.exit(main())
