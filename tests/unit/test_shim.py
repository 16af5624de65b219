"""The seeding shim, run for real: Python subprocesses started with the env reprobox gives them."""

from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobox import seeding

SHIM_FILES = ("sitecustomize.py", "reprobox_shim.py")

DRAWS = """
import json, random
import numpy as np
print(json.dumps([random.random(), np.random.rand(), np.random.default_rng().random(),
                  np.random.default_rng(None).random(), hash("abc")]))
"""

FAKE_TORCH = {
    "torch/__init__.py": """
        __version__ = "0.0+fake"
        calls = []
        _state = {"seed": None, "det": False, "warn_only": False}
        def manual_seed(seed):
            calls.append(["manual_seed", seed])
            _state["seed"] = seed
        def initial_seed():
            return _state["seed"]
        def use_deterministic_algorithms(mode, *, warn_only=False):
            calls.append(["use_deterministic_algorithms", mode, warn_only])
            _state.update(det=mode, warn_only=warn_only)
        def are_deterministic_algorithms_enabled():
            return _state["det"]
        def is_deterministic_algorithms_warn_only_enabled():
            return _state["warn_only"]
        def get_num_threads():
            return 3
        def histc():  # worded as torch 2.11 words it (tests/data/gpu/h100-driver580)
            import warnings
            warnings.warn("_histc_cuda with floating point input does not have a deterministic "
                          "implementation, but you set 'torch.use_deterministic_algorithms(True, "
                          "warn_only=True)'.")
        from torch import backends
        """,
    "torch/backends/__init__.py": "from torch.backends import cuda, cudnn\n",
    "torch/backends/cuda.py": "class matmul:\n    allow_tf32 = True\n",
    "torch/backends/cudnn.py": "deterministic = False\nbenchmark = True\nallow_tf32 = True\n",
}


def _clean_env() -> dict[str, str]:
    """This process's env without anything that would steer Python or the shim."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("PYTHON", "REPROBOX_"))}


def _write(folder: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def _run(script: Path, seed: int | None = 11, state_dir: Path | None = None,
         extra_path: tuple[Path, ...] = (), deterministic: bool = True,
         overrides: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = _clean_env()
    if extra_path:
        base["PYTHONPATH"] = ":".join(str(path) for path in extra_path)
    env = seeding.process_env(seeding.determinism(seed if seed is not None else 0,
                                                  deterministic=deterministic),
                              str(seeding.SHIM_DIR), str(state_dir) if state_dir else None, base)
    if seed is None:
        env.pop("REPROBOX_SEED")
    env.update(overrides or {})
    return subprocess.run([sys.executable, str(script)], env=env, cwd=script.parent,
                          capture_output=True, text=True, timeout=60, check=False)


def _succeeded(result: subprocess.CompletedProcess[str]) -> bool:
    assert "reprobox shim" not in result.stderr, result.stderr
    return result.returncode == 0


def _output(result: subprocess.CompletedProcess[str]) -> Any:
    assert _succeeded(result), result.stderr
    return json.loads(result.stdout)


def _state_files(state_dir: Path) -> list[dict[str, object]]:
    return [json.loads(path.read_text()) for path in sorted(state_dir.glob("state-*.json"))]


@pytest.fixture
def draws(tmp_path: Path) -> Path:
    return _write(tmp_path, {"draws.py": DRAWS}) / "draws.py"


def test_unseeded_script_repeats_under_one_seed_and_changes_with_another(draws: Path) -> None:
    first, second = _output(_run(draws, seed=11)), _output(_run(draws, seed=11))
    other = _output(_run(draws, seed=12))

    assert first == second
    assert all(a != b for a, b in zip(first, other, strict=True))
    # the same values an explicitly seeded script would get
    assert first[:2] == [random.Random(11).random(), np.random.RandomState(11).rand()]


def test_two_unseeded_generators_in_one_run_differ(draws: Path) -> None:
    _, _, first_rng, second_rng, _ = _output(_run(draws))
    assert first_rng != second_rng


def test_explicit_seeds_in_user_code_win(tmp_path: Path) -> None:
    script = _write(tmp_path, {"seeded.py": """
        import json, random
        import numpy as np
        random.seed(5)
        np.random.seed(5)
        print(json.dumps([random.random(), np.random.rand(), np.random.default_rng(5).random()]))
        """}) / "seeded.py"

    assert _output(_run(script, seed=11)) == [
        random.Random(5).random(), np.random.RandomState(5).rand(),
        np.random.default_rng(5).random()]


def test_children_from_subprocess_and_spawn_are_seeded(tmp_path: Path) -> None:
    script = _write(tmp_path, {"parent.py": """
        import json, multiprocessing, random, subprocess, sys
        import numpy as np

        def draw(queue):
            queue.put([random.random(), float(np.random.rand())])

        if __name__ == "__main__":
            code = ("import json, random, numpy; "
                    "print(json.dumps([random.random(), numpy.random.rand()]))")
            child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            process = context.Process(target=draw, args=(queue,))
            process.start()
            spawned = queue.get(timeout=30)
            process.join(timeout=30)
            print(json.dumps({"subprocess": json.loads(child.stdout), "spawn": spawned}))
        """}) / "parent.py"

    children = _output(_run(script, seed=21))

    expected = [random.Random(21).random(), np.random.RandomState(21).rand()]
    assert children == {"subprocess": expected, "spawn": expected}


def test_state_file_holds_the_state_in_force_at_exit(tmp_path: Path) -> None:
    script = _write(tmp_path, {"late.py": """
        import random
        import numpy as np
        np.random.default_rng()
        np.random.default_rng(3)
        np.random.seed(7)
        random.seed("user")
        """}) / "late.py"
    state_dir = tmp_path / "state"

    assert _succeeded(_run(script, seed=31, state_dir=state_dir))

    (state,) = _state_files(state_dir)
    assert {key: state[key] for key in (
        "seed", "deterministic", "python.hash_seed", "process.argv0", "random.seeded",
        "random.user_seed", "numpy.seeded", "numpy.reseeded_by_user", "numpy.user_seed",
        "numpy.version", "numpy.default_rng.unseeded_calls", "torch.imported",
        "env.OMP_NUM_THREADS", "env.CUBLAS_WORKSPACE_CONFIG")} == {
        "seed": 31, "deterministic": True, "python.hash_seed": "31", "process.argv0": str(script),
        "random.seeded": True, "random.user_seed": "user", "numpy.seeded": True,
        "numpy.reseeded_by_user": True, "numpy.user_seed": 7, "numpy.version": np.__version__,
        "numpy.default_rng.unseeded_calls": 1, "torch.imported": False,
        "env.OMP_NUM_THREADS": "1", "env.CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert all(value is None or isinstance(value, (str, int, float, bool))
               for value in state.values())
    only_file = f"state-{state['process.pid']}.json"  # no temp file left behind
    assert sorted(path.name for path in state_dir.iterdir()) == [only_file]


def test_torch_is_seeded_and_made_deterministic_on_import(tmp_path: Path) -> None:
    fake = _write(tmp_path / "fake", FAKE_TORCH)
    script = _write(tmp_path, {"uses_torch.py": """
        import json, torch
        print(json.dumps([torch.calls, torch.backends.cudnn.deterministic,
                          torch.backends.cudnn.benchmark]))
        """}) / "uses_torch.py"

    assert _output(_run(script, seed=41, extra_path=(fake,))) == [
        [["manual_seed", 41], ["use_deterministic_algorithms", True, False]], True, False]
    assert _output(_run(script, seed=41, extra_path=(fake,), deterministic=False)) == [
        [["manual_seed", 41]], False, True]
    warn_only = _run(script, seed=41, extra_path=(fake,), overrides={"REPROBOX_WARN_ONLY": "1"})
    assert _output(warn_only)[0][1] == ["use_deterministic_algorithms", True, True]


def test_warn_only_records_the_ops_that_had_no_deterministic_kernel(tmp_path: Path) -> None:
    fake = _write(tmp_path / "fake", FAKE_TORCH)
    script = _write(tmp_path, {"histogram.py": "import torch\ntorch.histc()\ntorch.histc()\n"})
    state_dir = tmp_path / "state"

    result = _run(script / "histogram.py", state_dir=state_dir, extra_path=(fake,),
                  overrides={"REPROBOX_WARN_ONLY": "1"})

    assert _succeeded(result)
    assert "does not have a deterministic implementation" in result.stderr  # still shown
    (state,) = _state_files(state_dir)
    assert state["torch.nondeterministic_ops"] == "_histc_cuda with floating point input"
    assert state["warn_only"] is True


def test_tf32_is_turned_off_where_the_original_had_it_off(tmp_path: Path) -> None:
    fake = _write(tmp_path / "fake", FAKE_TORCH)
    script = _write(tmp_path, {"tf32.py": """
        import json, torch
        print(json.dumps([torch.backends.cuda.matmul.allow_tf32,
                          torch.backends.cudnn.allow_tf32]))
        """}) / "tf32.py"

    assert _output(_run(script, extra_path=(fake,))) == [True, True]  # capture: untouched
    assert _output(_run(script, extra_path=(fake,),
                        overrides={"REPROBOX_TF32_OFF": "matmul"})) == [False, True]
    assert _output(_run(script, extra_path=(fake,),
                        overrides={"REPROBOX_TF32_OFF": "matmul,cudnn"})) == [False, False]


def test_torch_state_records_late_user_changes(tmp_path: Path) -> None:
    fake = _write(tmp_path / "fake", FAKE_TORCH)
    script = _write(tmp_path, {"tuned.py": """
        import torch
        torch.manual_seed(99)
        torch.backends.cudnn.benchmark = True
        """}) / "tuned.py"
    state_dir = tmp_path / "state"

    assert _succeeded(_run(script, seed=41, state_dir=state_dir, extra_path=(fake,)))

    (state,) = _state_files(state_dir)
    assert {key: value for key, value in state.items() if key.startswith("torch.")} == {
        "torch.imported": True, "torch.seeded": True, "torch.version": "0.0+fake",
        "torch.initial_seed": 99, "torch.deterministic_algorithms": True,
        "torch.deterministic_warn_only": False, "torch.cudnn.deterministic": True,
        "torch.cudnn.benchmark": True, "torch.num_threads": 3,
        "torch.cudnn.allow_tf32": True, "torch.matmul.allow_tf32": True,
        "torch.nondeterministic_ops": None,
        # not in the fake: recorded as unknown rather than failing
        "torch.float32_matmul_precision": None, "torch.version.cuda": None,
        "torch.cuda.initialized": None, "torch.matmul.fp32_precision": None,
        "torch.cudnn.conv.fp32_precision": None}


def test_a_torch_older_than_warn_only_is_made_deterministic_all_the_same(tmp_path: Path) -> None:
    old = dict(FAKE_TORCH)  # torch 1.8 to 1.10: use_deterministic_algorithms(mode) alone
    old["torch/__init__.py"] = old["torch/__init__.py"].replace(
        "def use_deterministic_algorithms(mode, *, warn_only=False):",
        "def use_deterministic_algorithms(mode):\n            warn_only = False")
    fake = _write(tmp_path / "fake", old)
    script = _write(tmp_path, {"old.py": """
        import json, torch
        print(json.dumps([torch.calls, torch.backends.cudnn.deterministic,
                          torch.backends.cudnn.benchmark]))
        """}) / "old.py"

    assert _output(_run(script, seed=5, extra_path=(fake,))) == [
        [["manual_seed", 5], ["use_deterministic_algorithms", True, False]], True, False]


def test_nothing_is_imported_eagerly(tmp_path: Path) -> None:
    fake = _write(tmp_path / "fake", FAKE_TORCH)
    script = _write(tmp_path, {"plain.py": """
        import json, sys
        print(json.dumps([name for name in ("numpy", "torch") if name in sys.modules]))
        """}) / "plain.py"
    state_dir = tmp_path / "state"

    assert _output(_run(script, state_dir=state_dir, extra_path=(fake,))) == []
    (state,) = _state_files(state_dir)
    assert (state["numpy.imported"], state["numpy.seeded"], state["torch.imported"]) == (
        False, False, False)


def test_hooked_modules_keep_their_real_loader(tmp_path: Path) -> None:
    script = _write(tmp_path, {"loader.py": """
        import json
        import numpy
        print(json.dumps([type(numpy.__loader__).__name__,
                          type(numpy.__spec__.loader).__name__]))
        """}) / "loader.py"
    assert _output(_run(script)) == ["SourceFileLoader", "SourceFileLoader"]


def test_find_spec_before_the_import_keeps_the_hook(tmp_path: Path) -> None:
    fake = _write(tmp_path / "fake", FAKE_TORCH)
    script = _write(tmp_path, {"probe_first.py": """
        import importlib.util, json
        assert importlib.util.find_spec("numpy") and importlib.util.find_spec("torch")
        import numpy, torch
        print(json.dumps([numpy.random.rand(), torch.calls]))
        """}) / "probe_first.py"

    assert _output(_run(script, seed=7, extra_path=(fake,))) == [
        np.random.RandomState(7).rand(),
        [["manual_seed", 7], ["use_deterministic_algorithms", True, False]]]


@pytest.mark.parametrize("seed", [11, None], ids=["seeded", "no-seed"])
def test_an_existing_sitecustomize_is_chained(tmp_path: Path, seed: int | None) -> None:
    other = _write(tmp_path / "other", {"sitecustomize.py": """
        import os
        os.environ["REPROBOX_TEST_CHAINED"] = "yes"
        """})
    script = _write(tmp_path, {"show.py": """
        import json, os, random, sys
        print(json.dumps([os.environ.get("REPROBOX_TEST_CHAINED"),
                          sys.modules["sitecustomize"].__file__, random.random()]))
        """}) / "show.py"

    marker, module_file, drawn = _output(_run(script, seed=seed, extra_path=(other,)))

    assert (marker, module_file) == ("yes", str(other / "sitecustomize.py"))
    assert (drawn == random.Random(11).random()) is (seed is not None)


FAILURES = {
    "bad-seed": ({}, {"REPROBOX_SEED": "eleven"}, "install failed (ValueError"),
    "numpy-hook": ({"numpy/__init__.py": "", "numpy/random.py": """
        def seed(value):
            raise RuntimeError("boom")
        """}, {}, "configuring numpy failed (RuntimeError: boom)"),
    "chained": ({"sitecustomize.py": "raise RuntimeError('broken site')\n"}, {},
                "the chained sitecustomize failed (RuntimeError: broken site)"),
    "state-dir": ({}, {"REPROBOX_STATE_DIR": "/dev/null/state"}, "writing the state file failed"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_shim_failure_is_reported_once_and_the_program_goes_on(tmp_path: Path,
                                                                 case: str) -> None:
    files, overrides, message = FAILURES[case]
    extra = _write(tmp_path / "extra", files)
    script = _write(tmp_path, {"app.py": """
        import random, sys
        import numpy
        random.random()
        print("finished")
        sys.exit(4)
        """}) / "app.py"

    result = _run(script, extra_path=(extra,), overrides=overrides)

    assert (result.returncode, result.stdout) == (4, "finished\n")
    shim_lines = [line for line in result.stderr.splitlines() if line.startswith("reprobox shim:")]
    assert len(shim_lines) == 1 and message in shim_lines[0], result.stderr


def test_without_reprobox_seed_nothing_changes(tmp_path: Path) -> None:
    script = _write(tmp_path, {"free.py": """
        import json, random, sys
        import numpy as np
        print(json.dumps([random.random(), "reprobox_shim" in sys.modules,
                          hasattr(np.random.default_rng, "__wrapped__")]))
        """}) / "free.py"
    state_dir = tmp_path / "state"

    first, second = (_output(_run(script, seed=None, state_dir=state_dir)) for _ in range(2))

    assert first[1:] == second[1:] == [False, False]
    assert first[0] != second[0]
    assert not state_dir.exists()


@pytest.mark.parametrize("name", SHIM_FILES)
def test_shim_is_python38_stdlib_only(name: str) -> None:
    source = (seeding.SHIM_DIR / name).read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
    assert not (seeding.SHIM_DIR / "__init__.py").exists()
