"""Arrays of other libraries through DLPack / __cuda_array_interface__, the result's type, and out=."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import interop
from gpuconv.dtypes import bfloat16

NO_CUDA = gpuconv.available_backends().get("cupy")
TORCH_MISSING = ("PyTorch is not installed (the README's test command leaves it out: PyPI's default build is the "
                 "multi-GB CUDA one; .ci/run installs the 2.13 CPU wheel and runs these tests)")


def _optional(name):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


jnp, torch = _optional("jax.numpy"), _optional("torch")


class DLPackOnly:
    """A producer with nothing but the DLPack protocol, backed by a NumPy array; records its calls."""

    def __init__(self, a, device=(1, 0)):
        self.a, self.device, self.calls = a, device, []

    def __dlpack__(self, **kwargs):
        self.calls.append(kwargs)
        return self.a.__dlpack__(**{k: v for k, v in kwargs.items() if k != "dl_device"})

    def __dlpack_device__(self):
        return self.device


def _problem(seed=0, nchw=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 9, 8) if nchw else (2, 9, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    return x, w


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_dlpack_producer_is_read_in_place_and_answered_with_numpy(data_format):
    x, w = _problem(nchw=data_format == "NCHW")
    px, pw = DLPackOnly(x), DLPackOnly(w)
    y = gpuconv.conv2d(px, pw, 2, "SAME", data_format, backend="numpy")
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, gpuconv.conv2d(x, w, 2, "SAME", data_format, backend="numpy"))
    assert np.shares_memory(interop.import_array("input", px), x)      # zero-copy
    assert all(c.get("stream") is None for c in px.calls + pw.calls)  # host memory takes no stream


def test_dlpack_producer_on_an_unknown_device_is_refused_naming_it():
    x, w = _problem()
    with pytest.raises(ValueError, match=r"input of type DLPackOnly lives on DLPack device \(10, 0\)"):
        gpuconv.conv2d(DLPackOnly(x, device=(10, 0)), w)


def test_dlpack_producer_of_an_unsupported_dtype_names_the_argument():
    x, w = _problem()
    with pytest.raises(TypeError, match="filters dtype int32"):
        gpuconv.conv2d(x, DLPackOnly(w.astype(np.int32)))


def test_conv2d_reference_takes_dlpack_producers():
    x, w = _problem()
    p = gpuconv.parse_problem(x.shape, x.dtype, w.shape, w.dtype)[0]
    np.testing.assert_array_equal(gpuconv.conv2d_reference(DLPackOnly(x), DLPackOnly(w), p),
                                  gpuconv.conv2d_reference(x, w, p))


class TestOut:
    def test_writes_into_out_and_returns_it(self):
        x, w = _problem()
        out = np.full((2, 7, 6, 4), np.nan, np.float32)
        assert gpuconv.conv2d(x, w, out=out) is out
        np.testing.assert_array_equal(out, gpuconv.conv2d(x, w))

    def test_any_strides_and_a_dlpack_producer(self):
        x, w = _problem()
        base = np.zeros((2, 4, 7, 6), np.float32)
        out = base.transpose(0, 2, 3, 1)                        # NHWC view of NCHW memory
        gpuconv.conv2d(x, w, out=out)
        np.testing.assert_array_equal(base.transpose(0, 2, 3, 1), gpuconv.conv2d(x, w))
        target = np.zeros((2, 7, 6, 4), np.float32)
        producer = DLPackOnly(target)
        assert gpuconv.conv2d(x, w, out=producer) is producer
        np.testing.assert_array_equal(target, gpuconv.conv2d(x, w))

    @pytest.mark.parametrize("out, error, match", [
        (np.zeros((2, 7, 6, 5), np.float32), ValueError, r"out has shape \(2, 7, 6, 5\); expected .*\(2, 7, 6, 4\)"),
        (np.zeros((2, 4, 7, 6), np.float32), ValueError, r"out has shape \(2, 4, 7, 6\)"),   # NCHW for NHWC
        (np.zeros((2, 7, 6, 4), np.float64), TypeError, "out has dtype float64; expected .* float32"),
        ([[0.0]], TypeError, "out of type list is not allowed"),
    ])
    def test_wrong_out_is_refused(self, out, error, match):
        x, w = _problem()
        with pytest.raises(error, match=match):
            gpuconv.conv2d(x, w, out=out)

    def test_read_only_out_is_refused(self):
        x, w = _problem()
        out = np.zeros((2, 7, 6, 4), np.float32)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="out of type ndarray is read-only"):
            gpuconv.conv2d(x, w, out=out)


@pytest.mark.skipif(jnp is None, reason="JAX is not installed (pip install 'jax[cpu]')")
class TestJax:

    @pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
    def test_jax_in_jax_out(self, data_format):
        x, w = _problem(1, nchw=data_format == "NCHW")
        y = gpuconv.conv2d(jnp.asarray(x), jnp.asarray(w), 1, "VALID", data_format, backend="numpy")
        assert type(y).__module__.split(".")[0] in ("jax", "jaxlib")
        np.testing.assert_array_equal(np.asarray(y), gpuconv.conv2d(x, w, 1, "VALID", data_format, backend="numpy"))

    def test_jax_cpu_array_is_read_in_place(self):
        jx = jnp.asarray(_problem()[0])
        assert interop.import_array("input", jx).ctypes.data == jx.unsafe_buffer_pointer()

    def test_bfloat16_goes_around_dlpack(self):
        x, w = (jnp.asarray(a).astype(jnp.bfloat16) for a in _problem())
        y = gpuconv.conv2d(x, w, backend="numpy")
        assert y.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(y), gpuconv.conv2d(np.asarray(x), np.asarray(w), backend="numpy"))

    def test_jax_out_is_refused_as_immutable(self):
        x, w = _problem()
        with pytest.raises(ValueError, match="JAX arrays are immutable"):
            gpuconv.conv2d(x, w, out=jnp.zeros((2, 7, 6, 4), jnp.float32))


@pytest.mark.skipif(torch is None, reason=TORCH_MISSING)
class TestTorch:

    def test_torch_in_torch_out_and_out(self):
        x, w = _problem(2)
        y = gpuconv.conv2d(torch.from_numpy(x), torch.from_numpy(w), backend="numpy")
        assert isinstance(y, torch.Tensor) and y.device.type == "cpu"
        expected = gpuconv.conv2d(x, w, backend="numpy")
        np.testing.assert_array_equal(y.numpy(), expected)
        out = torch.zeros(expected.shape)
        assert gpuconv.conv2d(x, w, out=out, backend="numpy") is out
        np.testing.assert_array_equal(out.numpy(), expected)

    def test_cpu_tensors_are_read_in_place(self):
        t = torch.from_numpy(_problem()[0])
        assert interop.import_array("input", t).ctypes.data == t.data_ptr()
        b = t.bfloat16()                                   # around DLPack as int16 bits: still no copy
        hb = interop.import_array("input", b)
        assert hb.dtype == bfloat16 and hb.ctypes.data == b.data_ptr()

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
    def test_every_dtype_comes_back_in_it(self, dtype):
        x, w = (a.astype(bfloat16 if dtype == "bfloat16" else dtype) for a in _problem(5))
        tdt = getattr(torch, dtype)
        tx, tw = (torch.from_numpy(a.astype(np.float32)).to(tdt) for a in (x, w))
        y = gpuconv.conv2d(tx, tw, backend="numpy")
        assert isinstance(y, torch.Tensor) and y.dtype == tdt
        np.testing.assert_array_equal(y.float().numpy(),
                                      gpuconv.conv2d(x, w, backend="numpy").astype(np.float32))

    def test_gradient_functions_answer_in_out_backprops_library(self):
        x, w = _problem(6)
        dy = np.random.default_rng(7).standard_normal((2, 9, 8, 4)).astype(np.float32)
        tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
        dx, dw = gpuconv.conv2d_backprop_input(x.shape, w, dy, 1, "SAME"), \
            gpuconv.conv2d_backprop_filter(x, w.shape, dy, 1, "SAME")
        results = {
            "backprop_input": (gpuconv.conv2d_backprop_input(torch.tensor(x.shape), tw, tdy, 1, "SAME"), dx),
            "backprop_filter": (gpuconv.conv2d_backprop_filter(tx, w.shape, tdy, 1, "SAME"), dw),
            "transpose": (gpuconv.conv2d_transpose(tdy, tw, x.shape, 1, "SAME"), dx),
        }
        got_dx, got_dw = gpuconv.conv2d_grads(tx, tw, tdy, 1, "SAME")
        results.update(grads_input=(got_dx, dx), grads_filter=(got_dw, dw))
        for name, (got, expected) in results.items():
            assert isinstance(got, torch.Tensor), name
            np.testing.assert_array_equal(got.numpy(), expected, err_msg=name)

    def test_tensor_that_requires_grad_is_refused_naming_the_argument(self):
        x, w = _problem()
        with pytest.raises(TypeError, match="filters of type torch.Tensor .*detach"):
            gpuconv.conv2d(x, torch.from_numpy(w).requires_grad_())
        with pytest.raises(TypeError, match="out_backprop of type torch.Tensor .*detach"):
            gpuconv.conv2d_backprop_input(x.shape, w, torch.zeros(2, 7, 6, 4, requires_grad=True))

    @pytest.mark.parametrize("case", [
        dict(strides=1, padding="SAME", dilations=1, groups=1, nchw=False),
        dict(strides=2, padding="VALID", dilations=1, groups=2, nchw=True),
        dict(strides=(1, 2), padding=[[0, 0], [2, 1], [0, 3], [0, 0]], dilations=(2, 1), groups=1, nchw=False),
        dict(strides=1, padding="SAME", dilations=2, groups=4, nchw=True),     # depthwise
    ])
    def test_values_and_gradients_match_torch_autograd_in_float64(self, case):
        """PyTorch as a second, independent reference (float64: its CPU kernels do not depend on the host
        there), NCHW tensors in channels_last memory included; padding as TF's, which torch takes
        explicitly (F.pad), since its padding="same" splits odd padding the other way."""
        import torch.nn.functional as F
        rng = np.random.default_rng(8)
        G = case["groups"]
        x = rng.standard_normal((2, 4, 11, 10))
        w = rng.standard_normal((3, 3, 4 // G, 4))                                   # HWIO
        nchw = case["nchw"]
        tx = torch.from_numpy(x) if nchw else torch.from_numpy(x.transpose(0, 2, 3, 1).copy())
        if nchw:
            tx = tx.contiguous(memory_format=torch.channels_last)
        tw = torch.from_numpy(w)
        fmt = "NCHW" if nchw else "NHWC"
        y = gpuconv.conv2d(tx, tw, case["strides"], case["padding"], fmt, case["dilations"], backend="numpy")
        p = gpuconv.parse_problem(tuple(tx.shape), x.dtype, w.shape, w.dtype, case["strides"], case["padding"],
                                  fmt, case["dilations"])[0]
        ref_x = torch.from_numpy(x).requires_grad_()
        ref_w = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_()   # OIHW
        ref_y = F.conv2d(F.pad(ref_x, (p.PL, p.PR, p.PT, p.PB)), ref_w, stride=(p.SH, p.SW),
                         dilation=(p.DH, p.DW), groups=G)
        to_fmt = (lambda t: t) if nchw else (lambda t: t.permute(0, 2, 3, 1))
        assert isinstance(y, torch.Tensor)
        torch.testing.assert_close(y, to_fmt(ref_y.detach()), rtol=1e-12, atol=1e-12)
        dy = torch.from_numpy(rng.standard_normal(tuple(ref_y.shape)))
        ref_y.backward(dy)
        dx, dw = gpuconv.conv2d_grads(tx, tw, to_fmt(dy), case["strides"], case["padding"], fmt,
                                      case["dilations"], backend="numpy")
        torch.testing.assert_close(dx, to_fmt(ref_x.grad), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dw, ref_w.grad.permute(2, 3, 1, 0), rtol=1e-12, atol=1e-12)

    def test_a_torch_autograd_function_over_gpuconv_passes_gradcheck(self):
        """The README's recipe for training with PyTorch tensors: forward and both gradients from
        gpuconv inside a torch.autograd.Function, checked by finite differences (torch.autograd.gradcheck)."""
        class Conv(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w):
                ctx.save_for_backward(x, w)
                return gpuconv.conv2d(x.detach(), w.detach(), 2, "SAME", backend="numpy")

            @staticmethod
            def backward(ctx, dy):
                x, w = ctx.saved_tensors
                return gpuconv.conv2d_grads(x.detach(), w.detach(), dy.contiguous(), 2, "SAME", backend="numpy")

        rng = np.random.default_rng(9)
        x = torch.from_numpy(rng.standard_normal((2, 5, 6, 3))).requires_grad_()
        w = torch.from_numpy(rng.standard_normal((3, 2, 3, 4))).requires_grad_()
        assert torch.autograd.gradcheck(Conv.apply, (x, w))

    @pytest.mark.skipif(NO_CUDA is not None, reason=f"no CUDA device: {NO_CUDA}")
    def test_cuda_tensor_runs_on_the_gpu_and_comes_back_on_it(self):
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device visible to PyTorch")
        x, w = _problem(3)
        tx, tw = (torch.from_numpy(a).cuda() for a in (x, w))
        y = gpuconv.conv2d(tx, tw)
        assert isinstance(y, torch.Tensor) and y.device.type == "cuda"
        np.testing.assert_allclose(y.cpu().numpy(), gpuconv.conv2d(x, w, backend="numpy"), rtol=1e-4, atol=1e-4)


class CudaArrayInterfaceOnly:
    def __init__(self, a):
        self.a = a

    @property
    def __cuda_array_interface__(self):
        return self.a.__cuda_array_interface__


@pytest.mark.skipif(NO_CUDA is not None, reason=f"no CUDA device: {NO_CUDA}")
def test_cuda_array_interface_producer_runs_on_the_gpu():
    import cupy
    x, w = _problem(4)
    cx = cupy.asarray(x)
    assert interop.import_array("input", CudaArrayInterfaceOnly(cx)).data.ptr == cx.data.ptr  # zero-copy
    y = gpuconv.conv2d(CudaArrayInterfaceOnly(cx), CudaArrayInterfaceOnly(cupy.asarray(w)))
    assert type(y) is cupy.ndarray
    np.testing.assert_allclose(y.get(), gpuconv.conv2d(x, w, backend="numpy"), rtol=1e-4, atol=1e-4)
