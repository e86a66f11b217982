"""Arrays of other libraries through DLPack / __cuda_array_interface__, the result's type, and out=."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import interop
from gpuconv.dtypes import bfloat16

NO_CUDA = gpuconv.available_backends().get("cupy")
TORCH_MISSING = ("PyTorch is not installed: only its CUDA build (>500 MB plus the CUDA wheels) is reachable "
                 "from this package index, so these tests run where a CPU wheel is installed")


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
