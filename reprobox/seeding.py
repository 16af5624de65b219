"""Host side of seeding: the seed and env a run starts with, and the state it ended in.

The shim that does the seeding inside each process lives in `reprobox/shim/` (stdlib only); this
module only builds the environment that activates it and reads the state files it leaves.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from reprobox.errors import CaptureError, UsageError
from reprobox.manifest import Determinism, Scalar

SHIM_DIR: Path = Path(__file__).resolve().parent / "shim"
CONTAINER_SHIM_DIR = "/opt/reprobox/shim"
MAX_SEED = 2**32 - 1  # PYTHONHASHSEED and numpy's legacy seed both accept 0..2**32-1
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
CUBLAS_WORKSPACE_CONFIG = ":4096:8"  # ~24 MiB of GPU memory; required by torch < 2.10 in det. mode
STATE_GLOB = "state-*.json"
SEED_VARS = ("PYTHONHASHSEED", "REPROBOX_SEED")  # what changes when only the seed does
# "; "-joined sets the shim records per process; the run's is their union.
_JOINED_KEYS = ("torch.cuda.devices_used", "torch.nondeterministic_ops")
XLA_DETERMINISM = "--xla_gpu_deterministic_ops=true"
# Read by TensorFlow before the shim can act (TF < 2.9 has no enable_op_determinism).
TENSORFLOW_ENV = {"TF_DETERMINISTIC_OPS": "1", "TF_CUDNN_DETERMINISTIC": "1"}
_TENSORFLOW = frozenset({"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"})
_XLA_USERS = _TENSORFLOW | {"jax", "jaxlib"}
# What the shim turns off at replay, by the names of the state keys that recorded it.
_TF32_SWITCHES = {"matmul": "torch.matmul.allow_tf32", "cudnn": "torch.cudnn.allow_tf32"}


def determinism(seed: int | None, threads: int = 1, deterministic: bool = True,
                warn_only: bool = False, packages: Iterable[str] = ()) -> Determinism:
    """The seed, thread count and env a run starts with; `seed=None` draws a fresh seed.

    `packages` are the environment's distribution names: TensorFlow and JAX get their own
    determinism switches, which must be in the environment before they are imported.
    """
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    _check_seed(seed)
    _check_threads(threads)
    env = {
        **{name: str(threads) for name in THREAD_VARS},
        "CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE_CONFIG,
        "PYTHONNOUSERSITE": "1",  # ~/.local packages would differ between host and image
        **seed_env(seed),
        "REPROBOX_DETERMINISTIC": "1" if deterministic else "0",
        "REPROBOX_WARN_ONLY": "1" if warn_only else "0",
    }
    if deterministic:
        env.update(_framework_env(set(packages)))
    return Determinism(seed=seed, python_hash_seed=str(seed), threads=threads,
                       deterministic=deterministic, warn_only=warn_only, env=env)


def resolved_seeds(seeds: Sequence[int | None], captured: int) -> list[int]:
    """The seeds to replay from, None naming the captured one: each in range, none twice."""
    if not seeds:
        raise UsageError("no seed to replay", hint="leave the seeds out for the captured one")
    resolved = [captured if seed is None else seed for seed in seeds]
    for seed in resolved:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise UsageError(f"seed {seed!r} is not an integer in 0..{MAX_SEED}",
                             hint="PYTHONHASHSEED and numpy accept only this range")
    repeated = sorted({seed for seed in resolved if resolved.count(seed) > 1})
    if repeated:
        raise UsageError(f"seed {repeated[0]} is asked for twice (the captured seed is "
                         f"{captured})", hint="name each seed once")
    return resolved


def seed_env(seed: int) -> dict[str, str]:
    """The variables a seed sets before the interpreter starts; the shim reads REPROBOX_SEED."""
    _check_seed(seed)
    return {name: str(seed) for name in SEED_VARS}


def _framework_env(packages: set[str]) -> dict[str, str]:
    env = dict(TENSORFLOW_ENV) if packages & _TENSORFLOW else {}
    if packages & _XLA_USERS:
        env["XLA_FLAGS"] = XLA_DETERMINISM
    return env


def replay_env(det: Determinism) -> dict[str, str]:
    """The env of a replay: the captured one, plus TF32 off where the original had it off."""
    env = dict(det.env)
    off = [name for name, key in _TF32_SWITCHES.items() if det.state.get(key) is False]
    if off:
        env["REPROBOX_TF32_OFF"] = ",".join(off)
    return env


def process_env(det: Determinism, shim_dir: str, state_dir: str | None,
                base: Mapping[str, str]) -> dict[str, str]:
    """The env for the user's command: `base`, the determinism vars, the shim first on the path."""
    env = dict(base)
    env.update(replay_env(det))
    if "XLA_FLAGS" in det.env and base.get("XLA_FLAGS"):  # keep the user's own XLA flags
        env["XLA_FLAGS"] = f"{base['XLA_FLAGS']} {det.env['XLA_FLAGS']}"
    env["PYTHONPATH"] = _python_path(shim_dir, base.get("PYTHONPATH", ""))
    env.pop("REPROBOX_STATE_DIR", None)  # never write into a state dir inherited from outside
    if state_dir is not None:
        env["REPROBOX_STATE_DIR"] = state_dir
    return env


def read_state(state_dir: Path) -> dict[str, Scalar]:
    """The end state of the run's root process plus `processes`: how many processes reported."""
    states = [state for state in map(_load_state, sorted(state_dir.glob(STATE_GLOB)))
              if state is not None]
    if not states:
        return {"processes": 0}
    root = dict(_root_state(states))
    root["processes"] = len(states)
    root.update(_across_processes(states))
    return root


def _across_processes(states: list[dict[str, Scalar]]) -> dict[str, Scalar]:
    """What any process did: under torchrun the ranks, not the launcher, touch the GPUs."""
    merged: dict[str, Scalar] = {}
    if any(state.get("torch.cuda.initialized") is True for state in states):
        merged["torch.cuda.initialized"] = True
    for key in _JOINED_KEYS:
        entries = {entry for state in states if isinstance(state.get(key), str)
                   for entry in str(state[key]).split("; ") if entry}
        if entries:
            merged[key] = "; ".join(sorted(entries))
    return merged


def _python_path(shim_dir: str, existing: str) -> str:
    # both the host and the image are POSIX, so the separator is ":" on either side
    kept = [entry for entry in existing.split(":") if entry != shim_dir] if existing else []
    return ":".join([shim_dir, *kept])


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CaptureError(f"seed {seed!r} is not an integer in 0..{MAX_SEED}",
                           hint="PYTHONHASHSEED and numpy accept only this range; pick one in it")


def _check_threads(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise CaptureError(f"thread count {threads!r} is not a positive integer",
                           hint="use 1 for bitwise-reproducible BLAS results")


def _load_state(path: Path) -> dict[str, Scalar] | None:
    """One process's state file, or None when it is unreadable, not JSON or not a flat dict."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not all(_is_scalar(value) for value in data.values()):
        return None
    return data


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _root_state(states: list[dict[str, Scalar]]) -> dict[str, Scalar]:
    """The process whose parent did not report (the command itself), earliest started first."""
    pids = {state.get("process.pid") for state in states}
    orphans = [state for state in states if state.get("process.ppid") not in pids]
    return min(orphans or states, key=_start_time)


def _start_time(state: Mapping[str, Scalar]) -> float:
    started = state.get("process.start_time")
    if isinstance(started, bool) or not isinstance(started, (int, float)) or math.isnan(started):
        return math.inf
    return float(started)
