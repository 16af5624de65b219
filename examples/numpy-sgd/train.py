"""Linear regression trained with mini-batch SGD in numpy.

It never seeds anything itself: reprobox injects the seed, so the run is replayable as it is.
Writes out/weights.npy, out/metrics.json and out/loss.csv.
"""

import argparse
import json
import pathlib

import numpy as np


def make_data(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    true_w = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    y = x @ true_w + 0.1 * rng.normal(size=n)
    return x, y


def train(x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch: int) -> tuple:
    rng = np.random.default_rng()  # unseeded on purpose
    w = rng.normal(scale=0.01, size=x.shape[1])
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            grad = 2 * x[idx].T @ (x[idx] @ w - y[idx]) / len(idx)
            w -= lr * grad
        losses.append(float(np.mean((x @ w - y) ** 2)))
    return w, losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    x, y = make_data(np.random.default_rng(), n=2000, d=16)
    w, losses = train(x, y, args.epochs, args.lr, batch=32)
    out = pathlib.Path("out")
    out.mkdir(exist_ok=True)
    np.save(out / "weights.npy", w)
    (out / "metrics.json").write_text(json.dumps({"final_loss": losses[-1], "epochs": args.epochs}))
    (out / "loss.csv").write_text("epoch,loss\n" + "".join(
        f"{i},{loss!r}\n" for i, loss in enumerate(losses)))
    for i, loss in enumerate(losses):
        print(f"epoch {i}: loss {loss:.6f}")


if __name__ == "__main__":
    main()
