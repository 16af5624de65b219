"""A small bag-of-features classifier in torch, on the GPU when there is one.

It never seeds anything itself and pools features with `index_add_`, which on CUDA adds with
atomics in whatever order the threads finish: two plain runs disagree in the last bits. Under
reprobox the seed and deterministic kernels are injected, so the run replays bit for bit.
Writes out/weights.npy and out/metrics.json.
"""

import argparse
import json
import pathlib

import numpy as np
import torch


def make_data(device: str, bags: int, items: int, dim: int) -> tuple:
    features = torch.randn(items, dim, device=device)
    bag_of_item = torch.randint(0, bags, (items,), device=device)
    labels = torch.randint(0, 4, (bags,), device=device)
    return features, bag_of_item, labels


def pooled(features: torch.Tensor, bag_of_item: torch.Tensor, bags: int) -> torch.Tensor:
    total = torch.zeros(bags, features.shape[1], device=features.device)
    return total.index_add_(0, bag_of_item, features)  # nondeterministic on CUDA by default


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    features, bag_of_item, labels = make_data(device, bags=512, items=200_000, dim=32)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(args.steps):
        loss = torch.nn.functional.cross_entropy(model(pooled(features, bag_of_item, 512)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    out = pathlib.Path("out")
    out.mkdir(exist_ok=True)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).cpu().numpy()
    np.save(out / "weights.npy", weights)
    (out / "metrics.json").write_text(json.dumps({"device": device, "final_loss": losses[-1]}))
    print(f"{device}: {args.steps} steps, final loss {losses[-1]:.6f}")


if __name__ == "__main__":
    main()
