"""report: comparisons and manifests rendered to plain text, as a user would read them."""

from __future__ import annotations

import dataclasses
import io
import json

from rich.console import Console, RenderableType

from reprobox.compare import Comparison, OutputComparison
from reprobox.manifest import Blas, FileRecord, Git, Manifest, Output, Package
from reprobox.report import comparison_json, comparison_table, manifest_summary


def _render(renderable: RenderableType, **console: object) -> str:
    options: dict[str, object] = {"width": 100, "color_system": None, **console}
    out = Console(file=io.StringIO(), **options)  # type: ignore[arg-type]
    out.print(renderable)
    return out.file.getvalue()  # type: ignore[attr-defined, no-any-return]


IDENTICAL = OutputComparison("out/weights.npy", "identical", "npy", "sha256 matches the record")
CLOSE = OutputComparison("metrics.json", "within_tolerance", "json",
                         "1 of 4 values differ, all within rtol=1e-06, atol=0; first at "
                         "$.metrics.loss: 0.25 vs 0.25000001", 1e-8, 4e-8, "$.metrics.loss", 1, 4)
DIFFERENT = OutputComparison("curve.csv", "different", "csv",
                             '1 of 12 cells outside rtol=1e-07, atol=0; first at row 3, col '
                             '"loss": 0.25 vs 0.3', 0.05, 0.2, 'row 3, col "loss"', 1, 12)
MISSING = OutputComparison("model.bin", "missing", "bytes", "the replay did not write this file")
EXTRA = OutputComparison("debug.log", "extra", "text",
                         "written by the replay but not a recorded output (12 bytes)")


def test_identical_table_lists_outputs_and_says_reproduced() -> None:
    text = _render(comparison_table(Comparison("identical", (IDENTICAL,))))
    assert "Output" in text and "Verdict" in text and "Detail" in text
    assert "out/weights.npy" in text and "sha256 matches the record" in text
    assert text.rstrip().splitlines()[-1] == "REPRODUCED (identical)"


def test_within_tolerance_is_reproduced_and_counted() -> None:
    text = _render(comparison_table(Comparison("within_tolerance", (IDENTICAL, CLOSE))))
    assert "within tolerance" in text
    assert "$.metrics.loss" in text
    assert text.rstrip().splitlines()[-1] == "REPRODUCED (within tolerance: 1 of 2 outputs)"


def test_different_counts_missing_outputs_and_extra_files() -> None:
    comparison = Comparison("different", (IDENTICAL, DIFFERENT, MISSING, EXTRA),
                            notes=("numpy 2.1.3 in the original, 2.0.0 in the replay",))
    text = _render(comparison_table(comparison))
    lines = text.rstrip().splitlines()
    assert lines[-1] == "NOT REPRODUCED (different: 2 of 3 outputs, 1 missing; 1 extra file)"
    assert lines[-3:-1] == ["Notes", "  - numpy 2.1.3 in the original, 2.0.0 in the replay"]
    for word in ("different", "missing", "extra", '"loss": 0.25 vs 0.3', "debug.log"):
        assert word in text


def test_nothing_recorded_says_so() -> None:
    text = _render(comparison_table(Comparison("identical", ())))
    assert text.strip() == "REPRODUCED (nothing to compare: no outputs were recorded)"


def test_paths_and_details_are_not_read_as_markup() -> None:
    odd = OutputComparison("out/[bold]w[/bold].npy", "different", "npy",
                           "first at w[3, 7]: [red]1 vs 2")
    text = _render(comparison_table(Comparison("different", (odd,))))
    assert "out/[bold]w[/bold].npy" in text
    assert "first at w[3, 7]: [red]1 vs 2" in text


def test_verdicts_are_coloured_when_the_terminal_has_colour() -> None:
    text = _render(comparison_table(Comparison("different", (IDENTICAL, DIFFERENT))),
                   color_system="standard", force_terminal=True)
    assert "\x1b[1;32midentical" in text
    assert "\x1b[1;31mdifferent" in text


def test_comparison_json_is_sorted_and_round_trips() -> None:
    comparison = Comparison("different", (DIFFERENT, MISSING), notes=("a note",))
    text = comparison_json(comparison)
    assert json.loads(text) == comparison.to_dict()
    assert text.startswith('{\n  "curves": [],\n  "environment": [],\n  "notes": [\n')
    assert '"reproduced": false' in text


def test_manifest_summary_shows_the_run(sample_manifest: Manifest) -> None:
    text = _render(manifest_summary(sample_manifest))
    for expected in (
        "Run numpy-sgd", "python train.py --epochs 3", "exit code 0 (succeeded)", "1.25 s",
        "1234, PYTHONHASHSEED=1234, threads=1, deterministic=on",
        "numpy.version=2.1.3 random.seeded=True", "redacted: HF_TOKEN", "42 others not captured",
        "cpython 3.11.7 (cp311, linux_x86_64)", "2 installed, 2 from the package index",
        "Debian GNU/Linux 12 (bookworm), x86_64, kernel 6.1.0, glibc 2.36",
        "Test CPU, 2 CPUs, 2 flags", "0123456789 on main (clean)", "https://example.org/x.git",
        "data/train.csv", "100 B, sha256 abababababab", "out/weights.npy", "rtol=1e-07",
    ):
        assert expected in text, expected
    assert "Notes" not in text
    assert len(text.splitlines()) <= 40


def test_manifest_summary_shows_what_needs_attention(sample_manifest: Manifest) -> None:
    python = dataclasses.replace(sample_manifest.python, packages=(
        *sample_manifest.python.packages,
        Package("mylib", "0.1.0", "editable", url="/home/me/mylib"),
        Package("tool", "1.2", "vcs", url="https://example.org/tool.git", commit="f" * 40),
    ))
    system = dataclasses.replace(sample_manifest.system,
                                 blas=(Blas("openblas", "0.3.27", "pthreads", 2, "numpy"),))
    manifest = dataclasses.replace(
        sample_manifest, python=python, system=system,
        run=dataclasses.replace(sample_manifest.run, exit_code=2, duration_s=3725.0),
        git=Git("abcdef0123456789", None, None, dirty=True, diff_file="git.diff"),
        inputs=tuple(FileRecord(f"data/part-{i}.csv", "ab" * 32, 3 * 1024**2) for i in range(11)),
        outputs=(Output("ckpt.npz", "cd" * 32, 5 * 1024**3, stored=False),),
        notes=("gpu: nvidia-smi not found",))
    text = _render(manifest_summary(manifest))
    for expected in (
        "exit code 2 (FAILED)", "1 h 2 min", "4 installed, 2 from the package index",
        "mylib 0.1.0 (editable: /home/me/mylib)",
        "tool 1.2 (vcs: https://example.org/tool.git @ ffffffffffff)",
        "openblas 0.3.27 (pthreads, 2 threads, via numpy)",
        "abcdef012345 on (detached) (dirty, diff in git.diff)", "Inputs (11)", "3.0 MiB",
        "… and 3 more", "5.0 GiB", "not stored (over the size cap)",
        "Notes", "  - gpu: nvidia-smi not found",
    ):
        assert expected in text, expected
    assert "data/part-8.csv" not in text
    assert len(text.splitlines()) <= 40


def test_manifest_summary_without_git(sample_manifest: Manifest) -> None:
    text = _render(manifest_summary(dataclasses.replace(sample_manifest, git=None)))
    assert "Git" not in text
    assert "Outputs (1)" in text


def test_manifest_summary_shows_the_gpus_and_the_cuda_stack() -> None:
    from pathlib import Path

    from reprobox import manifest as manifest_io

    data = Path(__file__).resolve().parents[1] / "data" / "manifests"
    text = _render(manifest_summary(manifest_io.read(data / "torch-h100.yaml")))
    assert "1× NVIDIA H100 80GB HBM3 (9.0), driver 580.159.04, CUDA 13.0 (via nvml)" in text
    assert "2.11.0+cu130, CUDA 13.0, cuDNN 91900" in text
    assert "not probed" in _render(manifest_summary(manifest_io.read(data / "numpy-sgd.yaml")))
