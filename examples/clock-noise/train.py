"""A run that cannot repeat: it mixes the clock and os.urandom into its initial weights.

No seed can fix this; reprobox must report the replay as `different` (exit code 3).
"""

import json
import os
import pathlib
import time

import numpy as np

entropy = int.from_bytes(os.urandom(8), "little") ^ time.time_ns()
rng = np.random.default_rng(entropy)  # explicitly seeded from entropy: the shim leaves it alone
weights = rng.normal(size=8)
for _ in range(10):
    weights -= 0.1 * (weights - 1.0)
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
np.save(out / "weights.npy", weights)
(out / "metrics.json").write_text(json.dumps({"mean_weight": float(weights.mean())}))
print("mean weight", float(weights.mean()))
