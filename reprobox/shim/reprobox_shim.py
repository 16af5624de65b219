"""Seed random, numpy and torch from REPROBOX_* env vars and record the state in force at exit.

Standard library only, Python 3.8+, no reprobox imports: this file runs inside every Python
process of the user's command, on the host during capture and in the image during replay.
Nothing here may break the user's program; any failure is reported once on stderr.
"""

from __future__ import annotations

import atexit
import os
import random
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: this module loads in every process
    from collections.abc import Callable
    from typing import Any

    Scalar = str | int | float | bool | None

MAX_SEED = 2**32 - 1  # numpy's legacy seed and PYTHONHASHSEED share this range
RECORDED_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES",
    "TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC", "XLA_FLAGS",
)
# torch's words for an op with no deterministic kernel, under warn_only=True
_NONDETERMINISTIC = " does not have a deterministic implementation"
_fired_ops: set[str] = set()

_state: dict[str, Scalar] = {}
_flags: dict[str, bool] = {"installed": False, "reported": False}


def install() -> None:
    """Seed `random` now, hook numpy/torch imports, and write the state at exit."""
    try:
        _install()
    except Exception as exc:  # noqa: BLE001 - the user's program must go on
        report("install", exc)


def report(where: str, exc: BaseException) -> None:
    """Tell the user, once per process, that the shim failed somewhere; never raise."""
    if _flags["reported"]:
        return
    _flags["reported"] = True
    import contextlib

    with contextlib.suppress(Exception):  # stderr may be closed
        sys.stderr.write(f"reprobox shim: {where} failed ({type(exc).__name__}: {exc}); "
                         "the program continues without it\n")
        sys.stderr.flush()


def _install() -> None:
    seed_text = os.environ.get("REPROBOX_SEED")
    if seed_text is None or _flags["installed"]:
        return
    seed = _parse_seed(seed_text)
    deterministic = os.environ.get("REPROBOX_DETERMINISTIC", "1") != "0"
    warn_only = os.environ.get("REPROBOX_WARN_ONLY", "0") == "1"
    _flags["installed"] = True
    _state.update({
        "seed": seed, "deterministic": deterministic, "warn_only": warn_only,
        "python.hash_seed": os.environ.get("PYTHONHASHSEED"),
        "python.hash_randomization": sys.flags.hash_randomization,
        "python.version": ".".join(str(part) for part in sys.version_info[:3]),
        "process.pid": os.getpid(), "process.ppid": os.getppid(),
        "process.start_time": time.time(),
    })
    if deterministic:
        # read by cuBLAS at handle creation; the host normally sets it already
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _seed_random(seed)
    _register_hook("numpy", lambda module: _configure_numpy(module, seed))
    _register_hook("torch", lambda module: _configure_torch(module, seed, deterministic,
                                                            warn_only))
    _register_hook("tensorflow", lambda module: _configure_tensorflow(module, seed, deterministic))
    atexit.register(_write_state_at_exit)


def _parse_seed(text: str) -> int:
    seed = int(text.strip())
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"REPROBOX_SEED={text!r} is outside 0..{MAX_SEED}")
    return seed


# --- random ----------------------------------------------------------------------------------


def _seed_random(seed: int) -> None:
    random.seed(seed)
    _state["random.seeded"] = True
    _state["random.reseeded_by_user"] = False
    _state["random.user_seed"] = None
    random.seed = _recording_seed(random.seed, "random")


def _recording_seed(original: Callable[..., Any], prefix: str) -> Callable[..., Any]:
    """Wrap a library's global seed function so a later call by user code is recorded."""

    def seed(*args: Any, **kwargs: Any) -> Any:
        value = args[0] if args else kwargs.get("seed", kwargs.get("a"))
        _state[prefix + ".reseeded_by_user"] = True
        _state[prefix + ".user_seed"] = _scalar(value)
        return original(*args, **kwargs)

    seed.__doc__ = getattr(original, "__doc__", None)
    seed.__name__ = getattr(original, "__name__", "seed")
    return seed


def _scalar(value: object) -> Scalar:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:100]
    return f"<{type(value).__name__}>"


# --- post-import hooks ------------------------------------------------------------------------


class _PostImportFinder:
    """A sys.meta_path finder that runs a hook right after a watched top-level module executes.

    The hook stays registered until the module really executes: `importlib.util.find_spec`
    (transformers probes for torch this way) asks for a spec without importing anything.
    """

    def __init__(self) -> None:
        self.hooks: dict[str, Callable[[Any], None]] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.hooks:
            return None
        spec = self._spec_from_other_finders(fullname, path, target)
        loader = getattr(spec, "loader", None)
        if spec is None or not hasattr(loader, "exec_module"):
            return None
        spec.loader = _HookedLoader(loader, self, fullname)
        return spec

    def take_hook(self, fullname: str) -> Callable[[Any], None] | None:
        """The hook for `fullname`, unregistered so that it runs once per process."""
        return self.hooks.pop(fullname, None)

    def _spec_from_other_finders(self, fullname: str, path: Any, target: Any) -> Any:
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


class _HookedLoader:
    """Delegates to the real loader, then runs the hook; the module only ever sees the real one."""

    def __init__(self, loader: Any, finder: _PostImportFinder, name: str) -> None:
        self._loader = loader
        self._finder = finder
        self._name = name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        create_module = getattr(self._loader, "create_module", None)
        return create_module(spec) if create_module is not None else None

    def exec_module(self, module: Any) -> None:
        # so that importlib.resources, reload() and introspection see the real loader
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        hook = self._finder.take_hook(self._name)
        if hook is not None:
            _run_hook(hook, module, self._name)


_finder = _PostImportFinder()


def _register_hook(name: str, hook: Callable[[Any], None]) -> None:
    module = sys.modules.get(name)
    if module is not None:  # imported before us (e.g. by another sitecustomize)
        _run_hook(hook, module, name)
        return
    _finder.hooks[name] = hook
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def _run_hook(hook: Callable[[Any], None], module: Any, name: str) -> None:
    try:
        hook(module)
    except Exception as exc:  # noqa: BLE001 - the import itself succeeded; keep it
        report(f"configuring {name}", exc)


# --- numpy ------------------------------------------------------------------------------------


def _configure_numpy(numpy: Any, seed: int) -> None:
    import importlib

    np_random: Any = importlib.import_module("numpy.random")
    _state["numpy.version"] = str(getattr(numpy, "__version__", None))
    np_random.seed(seed)
    _state["numpy.seeded"] = True
    _state["numpy.reseeded_by_user"] = False
    _state["numpy.user_seed"] = None
    np_random.seed = _recording_seed(np_random.seed, "numpy")
    np_random.default_rng = _counting_default_rng(np_random.default_rng, seed)


def _counting_default_rng(original: Callable[..., Any], seed: int) -> Callable[..., Any]:
    """default_rng() without a seed gets (seed, n-th unseeded call): fixed per run, distinct."""
    _state["numpy.default_rng.unseeded_calls"] = 0

    def default_rng(*args: Any, **kwargs: Any) -> Any:
        given = args[0] if args else kwargs.get("seed")
        if given is not None or len(args) > 1:
            return original(*args, **kwargs)
        count = _state["numpy.default_rng.unseeded_calls"]
        _state["numpy.default_rng.unseeded_calls"] = count + 1  # type: ignore[operator]
        return original([seed, count])

    default_rng.__doc__ = getattr(original, "__doc__", None)
    default_rng.__name__ = "default_rng"
    default_rng.__wrapped__ = original  # type: ignore[attr-defined]
    return default_rng


# --- torch ------------------------------------------------------------------------------------


def _configure_torch(torch: Any, seed: int, deterministic: bool, warn_only: bool) -> None:
    _state["torch.version"] = str(getattr(torch, "__version__", None))
    torch.manual_seed(seed)  # seeds every CUDA device too, lazily
    _state["torch.seeded"] = True
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        if warn_only:  # the keyword came with torch 1.11; strict mode needs no keyword
            torch.use_deterministic_algorithms(True, warn_only=True)
            _record_nondeterministic_warnings()
        else:
            torch.use_deterministic_algorithms(True)
    _turn_tf32_off(torch, os.environ.get("REPROBOX_TF32_OFF", ""))


def _turn_tf32_off(torch: Any, which: str) -> None:
    """Replay only: TF32 off where the original run had it off ("matmul", "cudnn").

    A switch already off is left alone: torch 2.9 and later keep track of which of their two
    TF32 APIs a program used, and the user's code must not find ours in its way.
    """
    import warnings

    switches = {"matmul": torch.backends.cuda.matmul, "cudnn": torch.backends.cudnn}
    with warnings.catch_warnings():  # newer torch warns about the older switches
        warnings.simplefilter("ignore")
        for name in which.split(","):
            switch = switches.get(name)
            if switch is not None and switch.allow_tf32:
                switch.allow_tf32 = False


def _record_nondeterministic_warnings() -> None:
    """Note each op that warned it has no deterministic kernel, then show the warning as usual."""
    import warnings

    # shown at least once per place even where a library set "ignore" for UserWarnings
    warnings.filterwarnings("default", message=".*" + _NONDETERMINISTIC)
    shown = warnings.showwarning

    def showwarning(message: Any, *args: Any, **kwargs: Any) -> Any:
        text = str(message)
        if _NONDETERMINISTIC in text:
            _fired_ops.add(text.split(_NONDETERMINISTIC, 1)[0].strip()[:120])
        return shown(message, *args, **kwargs)

    warnings.showwarning = showwarning


def _configure_tensorflow(tensorflow: Any, seed: int, deterministic: bool) -> None:
    _state["tensorflow.version"] = str(getattr(tensorflow, "__version__", None))
    tensorflow.random.set_seed(seed)
    _state["tensorflow.seeded"] = True
    if deterministic:  # the env vars cover older TensorFlow; this covers 2.9 and later
        tensorflow.config.experimental.enable_op_determinism()


def _torch_state(torch: Any) -> dict[str, Scalar]:
    # lambdas, so that a reader an older torch lacks is recorded as None, not an error
    readers: dict[str, Callable[[], Any]] = {
        "torch.initial_seed": lambda: torch.initial_seed(),
        "torch.deterministic_algorithms": lambda: torch.are_deterministic_algorithms_enabled(),
        "torch.deterministic_warn_only":
            lambda: torch.is_deterministic_algorithms_warn_only_enabled(),
        "torch.cudnn.deterministic": lambda: torch.backends.cudnn.deterministic,
        "torch.cudnn.benchmark": lambda: torch.backends.cudnn.benchmark,
        "torch.cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
        "torch.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
        "torch.float32_matmul_precision": lambda: torch.get_float32_matmul_precision(),
        # torch 2.9's TF32 API: "ieee" / "tf32"; None where torch has no such switch
        "torch.matmul.fp32_precision": lambda: torch.backends.cuda.matmul.fp32_precision,
        "torch.cudnn.conv.fp32_precision": lambda: torch.backends.cudnn.conv.fp32_precision,
        "torch.num_threads": lambda: torch.get_num_threads(),
        "torch.version.cuda": lambda: torch.version.cuda,
        "torch.cuda.initialized": lambda: torch.cuda.is_initialized(),
    }
    import warnings

    with warnings.catch_warnings():  # torch 2.9+ warns when its older TF32 switches are read
        warnings.simplefilter("ignore")
        state = {key: _read_or_none(reader) for key, reader in readers.items()}
    state["torch.nondeterministic_ops"] = "; ".join(sorted(_fired_ops)) or None
    if state["torch.cuda.initialized"]:  # never initialise CUDA just to describe it
        state.update(_torch_cuda_state(torch))
    return state


def _torch_cuda_state(torch: Any) -> dict[str, Scalar]:
    """The cuDNN in use and the GPUs the run allocated memory on: "0:NVIDIA H100 80GB HBM3"."""
    def used() -> str:
        return "; ".join(
            f"{i}:{torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
            if torch.cuda.max_memory_allocated(i) > 0)

    def capability() -> str:
        return ".".join(map(str, torch.cuda.get_device_capability()))

    return {
        "torch.cudnn.version": _read_or_none(lambda: torch.backends.cudnn.version()),
        "torch.cuda.device_count": _read_or_none(lambda: torch.cuda.device_count()),
        "torch.cuda.devices_used": _read_or_none(used),
        "torch.cuda.capability": _read_or_none(capability),
    }


def _read_or_none(reader: Callable[[], Any]) -> Scalar:
    try:
        return _scalar(reader())
    except Exception:  # noqa: BLE001 - "unknown" is a truthful record; a crash is not
        return None


# --- state at exit ----------------------------------------------------------------------------


def final_state() -> dict[str, Scalar]:
    """The flat state in force now: what was injected, overlaid by what user code changed."""
    state = dict(_state)
    state["process.argv0"] = _scalar(sys.argv[0]) if getattr(sys, "argv", None) else None
    state["random.state_sha256"] = _fingerprint(repr(random.getstate()).encode())
    for name in RECORDED_ENV:
        state["env." + name] = os.environ.get(name)
    state["numpy.imported"] = "numpy" in sys.modules
    state.setdefault("numpy.seeded", False)
    state.update(_numpy_fingerprint())
    torch = sys.modules.get("torch")
    state["torch.imported"] = torch is not None
    state.setdefault("torch.seeded", False)
    if torch is not None:
        state.update(_torch_state(torch))
    return state


def _numpy_fingerprint() -> dict[str, Scalar]:
    np_random = sys.modules.get("numpy.random")
    if np_random is None:
        return {}
    try:
        legacy = np_random.get_state(legacy=True)
        key = legacy[1].tobytes() + repr(legacy[2:]).encode()
    except Exception:  # noqa: BLE001 - a numpy we cannot read; record "unknown"
        return {"numpy.state_sha256": None}
    return {"numpy.state_sha256": _fingerprint(key)}


def _fingerprint(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _write_state_at_exit() -> None:
    state_dir = os.environ.get("REPROBOX_STATE_DIR")
    # a forked child inherits our atexit hook but is not the process we installed into
    if not state_dir or os.getpid() != _state.get("process.pid"):
        return
    try:
        _write_json_atomically(state_dir, f"state-{os.getpid()}.json", final_state())
    except Exception as exc:  # noqa: BLE001 - the program already finished; report only
        report("writing the state file", exc)


def _write_json_atomically(folder: str, name: str, data: dict[str, Scalar]) -> None:
    import json

    os.makedirs(folder, exist_ok=True)
    final_path = os.path.join(folder, name)
    temp_path = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(temp_path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, final_path)
    except BaseException:
        _remove_quietly(temp_path)
        raise


def _remove_quietly(path: str) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        os.remove(path)

