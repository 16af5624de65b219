"""Compare a replay's outputs with the original's and say how close they are, output by output.

Each output gets the best verdict that holds: `identical` (same bytes), `equivalent` (same
content in other bytes: a reordered .npz, reformatted JSON, CRLF line endings), `within_tolerance`
(numbers differ, but inside the output's rtol/atol), or `different`; plus `missing` for an output
the replay did not write and `extra` for a file it wrote that was never recorded. Numbers follow
`np.isclose(actual, expected, rtol, atol, equal_nan=True)`: the original is the reference.
This package reads files and returns data; `report` renders it.

```
result    the verdicts and the Comparison, ready for JSON
files     which comparer reads each output; byte-level fallbacks
tally     counts and extremes over one output's values
arrays    .npy/.npz     records  JSON     text  CSV/TSV and text
```
"""

from reprobox.compare.files import compare, compare_file
from reprobox.compare.result import (
    Comparison,
    CurveComparison,
    EnvironmentDifference,
    OutputComparison,
    OverallVerdict,
    Verdict,
    combine,
)

__all__ = ["Comparison", "CurveComparison", "EnvironmentDifference", "OutputComparison",
           "OverallVerdict", "Verdict", "combine", "compare", "compare_file"]
