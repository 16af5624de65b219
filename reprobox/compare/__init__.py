"""Compare a replay's outputs with the original's and say how close they are, output by output.

Each output gets the best verdict that holds: `identical` (same bytes), `equivalent` (same
content in other bytes: a reordered .npz, a checkpoint saved under another name, reformatted
JSON), `within_tolerance` (numbers differ, but inside the output's rtol/atol or ULPs), or
`different`; plus `missing` for an output the replay did not write and `extra` for a file it
wrote that was never recorded. Numbers follow `np.isclose(actual, expected, rtol, atol,
equal_nan=True)`: the original is the reference, and NaN equals NaN where both have it.
This package reads files and returns data; `report` and `html_report` render it.

```
result      the verdicts and the Comparison (curves, environment), ready for JSON
files       which comparer reads each output; byte-level fallbacks; curves attached
tolerances  per-output rtol/atol/ULPs by glob, from the command line or settings.yaml
tally       counts, extremes, ULPs and samples over one output's values
arrays      .npy/.npz element by element, in bounded chunks (streams: chunked readers)
tensors     PyTorch checkpoints and safetensors, tensor by tensor (torchpickle: safe loader)
records     JSON, YAML and JSON-lines value by value     text  CSV/TSV and text (masks)
curves      metric curves: where the original and the replay part
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
