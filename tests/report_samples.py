"""For the report tests: a comparison filled by hand as a real one would be (a checkpoint one ULP
off, a metric log that parts at step 120, a missing file, ranked environment differences), and a
reader of the HTML page that sees its text as a person would."""

from __future__ import annotations

import math
from html.parser import HTMLParser

from reprobox.compare import Comparison, CurveComparison, EnvironmentDifference, OutputComparison

PARTED_AT = 120
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
# elements a browser lays out as blocks or cells: their text does not run into the next one's
_BLOCKS = {"header", "div", "section", "h2", "p", "table", "tr", "th", "td", "figure",
           "figcaption", "svg", "text", "li", "footer"}


class Page(HTMLParser):
    """The text a reader sees (outside <style> and <title>) and every element with its attrs."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self._hidden = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._hidden += tag in ("style", "title")
        self.chunks.append(" " if tag in _BLOCKS else "")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("style", "title")
        self.chunks.append(" " if tag in _BLOCKS else "")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.chunks).split())

    def all(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag
                and all(a.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())]


def loss_curve(points: int = 200, parted_at: int = PARTED_AT) -> CurveComparison:
    """A decaying loss logged every step; the replay drifts away from `parted_at` on."""
    steps = tuple(float(step) for step in range(points))
    expected = tuple(2.3 * math.exp(-step / 60) + 0.05 * math.sin(step / 3) + 0.1
                     for step in range(points))
    actual = tuple(value + (0.0 if step < parted_at else 0.002 * (step - parted_at))
                   for step, value in enumerate(expected))
    return CurveComparison("logs/metrics.jsonl", "loss", steps, expected, actual,
                           parted_at=float(parted_at), end_gap=abs(actual[-1] - expected[-1]))


def accuracy_curve() -> CurveComparison:
    """An accuracy logged every 50 steps that never parts."""
    steps = tuple(float(step) for step in range(0, 1001, 50))
    values = tuple(round(0.5 + 0.45 * (1 - math.exp(-step / 300)), 4) for step in steps)
    return CurveComparison("logs/eval.csv", "accuracy", steps, values, values, None, 0.0)


def sample_comparison() -> Comparison:
    """NOT REPRODUCED: one identical output, one within tolerance, one different with samples,
    one missing, one extra; two curves; four environment differences given out of order."""
    outputs = (
        OutputComparison("out/config.json", "identical", "json", "sha256 matches the record"),
        OutputComparison("ckpt/model.pt", "within_tolerance", "pt",
                         "3 of 1,048,576 elements differ, all within rtol=1e-05, atol=1e-08; "
                         "first at fc.weight[3, 7]", 5.96e-08, 1.19e-07, "fc.weight[3, 7]", 3,
                         1_048_576, max_ulps=1,
                         samples=(("fc.weight[3, 7]", "0.50000006", "0.5"),)),
        OutputComparison("out/predictions.npy", "different", "npy",
                         "812 of 10,000 elements outside rtol=1e-07, atol=0; first at [17]",
                         0.0312, 0.0844, "[17]", 812, 10_000, max_ulps=2_831_155,
                         samples=(("[17]", "0.36962891", "0.40087891"),
                                  ("[18]", "0.7421875", "0.7265625"),
                                  ("[40]", "nan", "0.0"),
                                  ("[41]", "1.0", "1.0078125"),
                                  ("[55]", "-0.25", "-0.2578125"),
                                  ("[56]", "3.5", "3.25"),
                                  ("[57]", "<script>alert(1)</script>", "&amp;"))),
        OutputComparison("out/weights.safetensors", "missing", "safetensors",
                         "the replay did not write this file"),
        OutputComparison("debug.log", "extra", "text",
                         "written by the replay but not a recorded output (12 bytes)"),
    )
    environment = (
        EnvironmentDifference("OMP_NUM_THREADS", "1", "(unset)", 2,
                              "more threads split reductions differently"),
        EnvironmentDifference("torch", "2.3.1+cu121", "2.4.0+cu121", 3,
                              "kernels and their defaults change between releases"),
        EnvironmentDifference("GPU model", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", 3,
                              "another architecture picks other kernels and reduction orders"),
        EnvironmentDifference("hostname", "node-07", "node-12", 1,
                              "does not change the numbers unless the code reads it"),
    )
    return Comparison("different", outputs,
                      notes=("Python 3.11.7 in the original, 3.11.9 in the replay",),
                      curves=(loss_curve(), accuracy_curve()), environment=environment)
