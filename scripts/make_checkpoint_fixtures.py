#!/usr/bin/env python3
"""Write small real PyTorch checkpoints and safetensors files for the compare tests.

    python scripts/make_checkpoint_fixtures.py OUT_DIR

Needs torch (and safetensors for the .safetensors files). Run once where torch is installed;
the files it writes live in tests/data/checkpoints/ and are read there without torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    net = model()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
             "metrics": {"loss": 0.25, "history": [1.0, 0.5, 0.25]}}
    # the same content saved twice, under two names: the bytes differ (the archive's folder)
    torch.save(state, out / "run.pt")
    torch.save(state, out / "copy_of_run.ckpt")
    torch.save(state, out / "legacy.pth", _use_new_zipfile_serialization=False)
    # one weight one float32 ULP apart, and one far apart
    nudged = {k: v.clone() for k, v in net.state_dict().items()}
    nudged["0.weight"][1, 2] = torch.nextafter(nudged["0.weight"][1, 2], torch.tensor(10.0))
    torch.save(nudged, out / "one_ulp.pt")
    torch.save(net.state_dict(), out / "weights.pt")
    far = {k: v.clone() for k, v in net.state_dict().items()}
    far["2.bias"][0] += 0.5
    torch.save(far, out / "far.pt")
    shaped = dict(net.state_dict(), **{"2.bias": torch.zeros(3)})
    torch.save(shaped, out / "other_shape.pt")
    torch.save({"h": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
                "f16": torch.tensor([1.0, float("nan"), -2.5], dtype=torch.float16),
                "i64": torch.tensor([2**60, 2**60 + 1]), "b": torch.tensor([True, False]),
                "view": torch.arange(10.0)[2:8:2]}, out / "dtypes.pt")
    try:
        from safetensors.torch import save_file
    except ImportError:
        print("safetensors not installed: no .safetensors files")
    else:
        save_file(dict(net.state_dict()), str(out / "weights.safetensors"),
                  metadata={"format": "pt"})
        save_file(nudged, str(out / "one_ulp.safetensors"))
    (out / "made_with.json").write_text(json.dumps({"torch": torch.__version__}))
    print(sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
