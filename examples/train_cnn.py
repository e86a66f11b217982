"""A small CNN trained with plain NumPy, gpuconv doing the convolutions and their gradients.

Two 3x3 conv layers with ReLU, global max pooling and a linear head, softmax cross-entropy, plain SGD,
on synthetic 16x16 images whose class is the shape of a bright stroke (bar, diagonal, square). Run it:
    python examples/train_cnn.py
"""
from __future__ import annotations

import numpy as np

import gpuconv

CLASSES = 4


SHAPES = (np.ones((1, 6)), np.ones((6, 1)), np.eye(6), np.ones((3, 3)))  # the class of an image: its shape


def synthetic_batch(rng, n: int, size: int = 16):
    """Noise images with one bright shape (a horizontal bar, a vertical bar, a diagonal or a square) at a
    random place; the label is the shape, so the network must learn orientation, not position."""
    x = rng.normal(0.0, 0.3, (n, size, size, 1)).astype(np.float32)
    labels = rng.integers(0, CLASSES, n)
    for i, c in enumerate(labels):
        shape = SHAPES[c]
        r0 = rng.integers(0, size - shape.shape[0] + 1)
        c0 = rng.integers(0, size - shape.shape[1] + 1)
        x[i, r0:r0 + shape.shape[0], c0:c0 + shape.shape[1], 0] += shape.astype(np.float32)
    return x, labels


def init(rng, c1: int = 8, c2: int = 16) -> dict:
    he = lambda fan_in, shape: (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return {"w1": he(9 * 1, (3, 3, 1, c1)), "w2": he(9 * c1, (3, 3, c1, c2)),
            "wf": he(c2, (c2, CLASSES)), "bf": np.zeros(CLASSES, np.float32)}


def loss_and_grads(params: dict, x: np.ndarray, labels: np.ndarray, backend: str = "auto"):
    """Softmax cross-entropy of the batch and its gradients for every parameter (convolutions and their
    gradients on gpuconv's `backend`)."""
    w1, w2, wf, bf = params["w1"], params["w2"], params["wf"], params["bf"]
    z1 = gpuconv.conv2d(x, w1, padding="SAME", backend=backend)
    a1 = np.maximum(z1, 0)
    z2 = gpuconv.conv2d(a1, w2, strides=2, padding="SAME", backend=backend)
    a2 = np.maximum(z2, 0)
    pooled = a2.max(axis=(1, 2))                              # global max pooling: where the stroke is
    logits = pooled @ wf + bf
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = float(-np.log(p[np.arange(n), labels] + 1e-12).mean())
    dlogits = p
    dlogits[np.arange(n), labels] -= 1
    dlogits /= n
    grads = {"wf": pooled.T @ dlogits, "bf": dlogits.sum(axis=0)}
    dpooled = dlogits @ wf.T
    at_max = a2 == pooled[:, None, None, :]
    da2 = at_max * (dpooled / at_max.sum(axis=(1, 2)))[:, None, None, :]
    dz2 = (da2 * (z2 > 0)).astype(np.float32)
    da1, grads["w2"] = gpuconv.conv2d_grads(a1, w2, dz2, strides=2, padding="SAME", backend=backend)
    dz1 = (da1 * (z1 > 0)).astype(np.float32)
    grads["w1"] = gpuconv.conv2d_backprop_filter(x, w1.shape, dz1, padding="SAME", backend=backend)
    return loss, grads


def train(steps: int = 100, batch: int = 32, lr: float = 0.3, seed: int = 0, backend: str = "auto") -> list[float]:
    rng = np.random.default_rng(seed)
    params = init(rng)
    losses = []
    for _ in range(steps):
        x, labels = synthetic_batch(rng, batch)
        loss, grads = loss_and_grads(params, x, labels, backend)
        for k in params:
            params[k] -= lr * grads[k]
        losses.append(loss)
    return losses


if __name__ == "__main__":
    losses = train()
    for step in range(0, len(losses), 10):
        print(f"step {step:3d}: loss {np.mean(losses[step:step + 10]):.3f}")
