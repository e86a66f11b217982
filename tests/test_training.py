"""examples/train_cnn.py: a small CNN trained with NumPy, gpuconv's conv2d and its gradients: the loss falls,
and every gradient matches TensorFlow's GradientTape on the same weights and batch."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("train_cnn", Path(__file__).parents[1] / "examples" / "train_cnn.py")
train_cnn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_cnn)


def test_loss_falls():
    losses = train_cnn.train(steps=100)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), (np.mean(losses[:10]), np.mean(losses[-10:]))


def test_training_steps_on_the_emulator_match_numpy():
    """Three steps with every convolution and gradient in the CUDA kernels (on the emulator): the losses
    of the NumPy backend's run, to float32 rounding."""
    from gpuconv.backends import available_backends
    why = available_backends()["emulator"]
    if why is not None:
        pytest.skip(f"emulator unusable: {why}")
    kernels = train_cnn.train(steps=3, batch=4, backend="emulator")
    reference = train_cnn.train(steps=3, batch=4, backend="numpy")
    np.testing.assert_allclose(kernels, reference, rtol=1e-4)


def test_gradients_match_tensorflow():
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the test extra has it)")
    rng = np.random.default_rng(7)
    params = train_cnn.init(rng)
    x, labels = train_cnn.synthetic_batch(rng, 8)
    loss, grads = train_cnn.loss_and_grads(params, x, labels)
    t = {k: tf.Variable(v) for k, v in params.items()}
    with tf.GradientTape() as tape:
        a1 = tf.nn.relu(tf.nn.conv2d(x, t["w1"], 1, "SAME"))
        a2 = tf.nn.relu(tf.nn.conv2d(a1, t["w2"], 2, "SAME"))
        logits = tf.reduce_max(a2, axis=(1, 2)) @ t["wf"] + t["bf"]
        tloss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    tgrads = tape.gradient(tloss, t)
    assert loss == pytest.approx(float(tloss), rel=1e-5)
    for k, g in grads.items():
        ref = tgrads[k].numpy()
        np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max(), err_msg=k)
