"""Every invalid input raises ValueError/TypeError naming the argument, its value and what is allowed.

TF 2.21 mishandles several of these (aborts on rank-3 input, accepts batch padding): they are checked
against our own rules only, never by calling TF.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import configs
import gpuconv
from gpuconv.backends import get_backend

F32 = np.float32


def x_(shape=(1, 5, 5, 4), dtype=F32):
    return np.ones(shape, dtype)


def w_(shape=(3, 3, 4, 2), dtype=F32):
    return np.ones(shape, dtype)


def raises(exc, *fragments, x=None, w=None, backend="auto", **kw):
    """conv2d must raise `exc` with every fragment (regex-escaped, case-sensitive) in its message."""
    x = x_() if x is None else x
    w = w_() if w is None else w
    with pytest.raises(exc) as info:
        gpuconv.conv2d(x, w, backend=backend, **kw)
    msg = str(info.value)
    for f in fragments:
        assert re.search(re.escape(f), msg), f"{f!r} not in the message: {msg}"
    return msg


# --- ranks and channels -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 5, 4), (5, 4), (4,)])
def test_input_rank_below_4(shape, backend):
    raises(ValueError, "input", f"rank {len(shape)}", "rank >= 4", x=np.ones(shape, F32), backend=backend)


@pytest.mark.parametrize("shape", [(3, 3, 4), (1, 3, 3, 4, 2), (3,)])
def test_filter_rank_not_4(shape, backend):
    raises(ValueError, "filters", f"rank {len(shape)}", "HWIO", w=np.ones(shape, F32), backend=backend)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_channel_mismatch(data_format, backend):
    x = x_((1, 6, 6, 5)) if data_format == "NHWC" else x_((1, 5, 6, 6))
    raises(ValueError, "5 channels", "in_channels 2", x=x, w=w_((3, 3, 2, 4)), data_format=data_format,
           backend=backend)


def test_more_filter_channels_than_input(backend):
    raises(ValueError, "4 channels", "in_channels 8", w=w_((3, 3, 8, 2)), backend=backend)


def test_out_channels_not_divisible_by_groups(backend):
    raises(ValueError, "3 out_channels", "2 groups", w=w_((3, 3, 2, 3)), backend=backend)


def test_zero_filter_in_channels(backend):
    raises(ValueError, "in_channels 0", x=x_((1, 5, 5, 0)), w=w_((3, 3, 0, 2)), backend=backend)


@pytest.mark.parametrize("shape", [(0, 3, 4, 2), (3, 0, 4, 2)])
def test_zero_filter_size(shape, backend):
    raises(ValueError, "filters", "filter height and width must be >= 1", w=w_(shape), backend=backend)


# --- strides and dilations ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["strides", "dilations"])
@pytest.mark.parametrize("value, bad", [(0, "0"), (-1, "-1"), ([1, 0], "0"), ([2, -2], "-2"),
                                        ([1, 1, 0, 1], "0")])
def test_stride_dilation_not_positive(name, value, bad, backend):
    raises(ValueError, f"{name}={value!r}", f"contains {bad}", ">= 1", backend=backend, **{name: value})


@pytest.mark.parametrize("name", ["strides", "dilations"])
@pytest.mark.parametrize("value, bad", [(2.5, None), ("2", None), (True, None), ([1, 2.0], "2.0"),
                                        ([1, "1"], "'1'"), ([True, 1], "True"), ({}, None)])
def test_stride_dilation_not_integer(name, value, bad, backend):
    msg = raises(TypeError, f"{name}={value!r}", "int", backend=backend, **{name: value})
    if bad is not None:
        assert f"contains {bad}" in msg


@pytest.mark.parametrize("name", ["strides", "dilations"])
@pytest.mark.parametrize("value", [[1, 1, 1], [], [1, 1, 1, 1, 1]])
def test_stride_dilation_wrong_length(name, value, backend):
    raises(ValueError, f"{name}={value!r}", f"has {len(value)} entries", "1, 2 or 4", backend=backend,
           **{name: value})


@pytest.mark.parametrize("name", ["strides", "dilations"])
@pytest.mark.parametrize("data_format, value", [
    ("NHWC", [2, 1, 1, 1]),     # batch entry
    ("NHWC", [1, 1, 1, 2]),     # channel entry
    ("NHWC", [1, 1, 2, 2]),     # a valid NCHW 4-form, wrong for NHWC
    ("NCHW", [1, 2, 1, 1]),     # channel entry
    ("NCHW", [2, 1, 1, 1]),     # batch entry
    ("NCHW", [1, 2, 2, 1]),     # a valid NHWC 4-form, wrong for NCHW
])
def test_4form_batch_channel_entries(name, data_format, value, backend):
    x = x_((1, 9, 9, 4)) if data_format == "NHWC" else x_((1, 4, 9, 9))
    raises(ValueError, f"{name}={value!r}", "batch and channel entries must be 1", repr(data_format),
           x=x, data_format=data_format, backend=backend, **{name: value})


def test_numpy_integer_scalars_are_accepted(backend):
    y = gpuconv.conv2d(x_((1, 9, 9, 4)), w_(), strides=np.int64(2), dilations=[np.int32(1), 2],
                       backend=backend)
    assert y.shape == (1, 4, 3, 2)


# --- padding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["FULL", "", "SAMEE", "causal"])
def test_unknown_padding_string(value, backend):
    raises(ValueError, f"padding={value!r}", "'VALID', 'SAME'", backend=backend, padding=value)


@pytest.mark.parametrize("value", [5, None, 2.0])
def test_padding_not_string_or_pairs(value, backend):
    raises(TypeError, f"padding={value!r}", "'VALID', 'SAME'", backend=backend, padding=value)


@pytest.mark.parametrize("value", [
    [[0, 0], [-1, 0], [0, 0], [0, 0]],
    [[0, 0], [0, 0], [0, -2], [0, 0]],
])
def test_explicit_padding_negative(value, backend):
    raises(ValueError, f"padding={value!r}", "negative", backend=backend, padding=value)


@pytest.mark.parametrize("value", [
    [[1, 1], [1, 1]],                        # the 2-pair form is not accepted (TF neither)
    [[0, 0], [1], [1, 1], [0, 0]],
    [[0, 0], [1, 1, 1], [1, 1], [0, 0]],
    [[0, 0], [1, 1], [1, 1], [0, 0], [0, 0]],
    [1, 1, 1, 1],
])
def test_explicit_padding_wrong_shape(value, backend):
    raises((ValueError, TypeError), f"padding={value!r}", "[[0,0],[top,bottom],[left,right],[0,0]]",
           backend=backend, padding=value)


@pytest.mark.parametrize("data_format, value", [
    ("NHWC", [[1, 0], [1, 1], [1, 1], [0, 0]]),     # batch padding: TF 2.21 silently accepts it
    ("NHWC", [[0, 0], [1, 1], [1, 1], [0, 1]]),     # channel padding
    ("NCHW", [[0, 0], [1, 1], [1, 1], [0, 0]]),     # the NHWC form given for NCHW: channel entry
    ("NCHW", [[0, 2], [0, 0], [1, 1], [1, 1]]),
])
def test_explicit_padding_batch_channel_entries(data_format, value, backend):
    x = x_((1, 5, 5, 4)) if data_format == "NHWC" else x_((1, 4, 5, 5))
    raises(ValueError, f"padding={value!r}", "batch and channel pads must be 0", repr(data_format),
           x=x, data_format=data_format, backend=backend, padding=value)


@pytest.mark.parametrize("value", [[[0, 0], [1.5, 1], [1, 1], [0, 0]], [[0, 0], ["1", 1], [1, 1], [0, 0]],
                                   [[0, 0], [True, 1], [1, 1], [0, 0]]])
def test_explicit_padding_not_integer(value, backend):
    raises(TypeError, f"padding={value!r}", "not an integer", backend=backend, padding=value)


@pytest.mark.parametrize("H, KH, dilation, pads, eff", [
    (1, 3, 1, (0, 0), 3),        # VALID, kernel larger than the input by 2 (by 1 gives TF's empty output)
    (5, 3, 3, (0, 0), 7),        # dilation makes the kernel larger than the input
    (2, 5, 1, (1, 0), 5),        # explicit pads not enough
])
def test_output_size_would_be_negative(H, KH, dilation, pads, eff, backend):
    padding = "VALID" if pads == (0, 0) else [[0, 0], list(pads), [0, 0], [0, 0]]
    raises(ValueError, "Computed output size would be negative", "height", f"padded input size {H + sum(pads)}",
           f"dilated filter size {eff}", x=x_((1, H, 8, 4)), w=w_((KH, 1, 4, 2)), dilations=[dilation, 1],
           padding=padding, backend=backend)


def test_valid_padding_on_zero_sized_image(backend):
    # TF 2.21: (0 - 1 + 1) / 1 = 0 output columns, an empty result, not an error
    assert gpuconv.conv2d(x_((1, 5, 0, 4)), w_((1, 1, 4, 2)), backend=backend).shape == (1, 5, 0, 2)


# (padded size, dilated filter size, stride) -> TF 2.21's output size, or None where TF raises
# "Computed output size would be negative": (padded - filter + stride) / stride truncated toward zero.
TF_SHORT_INPUT = [(1, 3, 1, None), (2, 3, 1, 0), (1, 3, 2, 0), (1, 3, 3, 0), (1, 5, 3, 0), (1, 5, 2, None),
                  (1, 7, 3, None), (1, 6, 3, 0), (0, 1, 1, 0), (0, 2, 2, 0), (0, 3, 2, 0), (0, 4, 2, None)]


@pytest.mark.parametrize("padded, eff, stride, expected", TF_SHORT_INPUT)
@pytest.mark.parametrize("explicit", [False, True])
def test_input_smaller_than_filter_follows_tf(padded, eff, stride, expected, explicit, backend):
    H, pads = (max(padded - 1, 0), [1, 0]) if explicit and padded else (padded, [0, 0])
    kw = dict(strides=[stride, 1], padding=[[0, 0], pads, [0, 0], [0, 0]] if explicit else "VALID")
    x, w = x_((2, H, 2, 1)), w_((eff, 1, 1, 3))
    if expected is None:
        raises(ValueError, "Computed output size would be negative", "height", f"stride {stride}",
               x=x, w=w, backend=backend, **kw)
    else:
        assert gpuconv.conv2d(x, w, backend=backend, **kw).shape == (2, expected, 2, 3)


def test_tf_example_of_an_empty_strided_output(backend):
    # the case TF answers with shape (2, 0, 2, 3), in both layouts
    assert gpuconv.conv2d(x_((2, 1, 2, 1)), w_((3, 1, 1, 3)), strides=[3, 1], backend=backend).shape == (2, 0, 2, 3)
    y = gpuconv.conv2d(x_((2, 1, 1, 2)), w_((3, 1, 1, 3)), strides=[3, 1], data_format="NCHW", backend=backend)
    assert y.shape == (2, 3, 0, 2)


@pytest.mark.parametrize("arg, value", [("strides", 2**60), ("strides", [1, 2**31]), ("dilations", 2**40),
                                        ("padding", [[0, 0], [2**62, 0], [0, 0], [0, 0]])])
def test_huge_strides_dilations_pads_name_the_limit(arg, value):
    raises(ValueError, f"{arg}={value!r}", "larger than the limit 2**31-1", **{arg: value})


def test_padded_size_beyond_int_range():
    raises(ValueError, "along height", "padded input size 2147483653", "at most 2**31-1",
           padding=[[0, 0], [2**30, 2**30], [0, 0], [0, 0]])


def test_huge_shapes_name_the_limit():
    huge = np.lib.stride_tricks.as_strided(np.ones(1, F32), (2**31, 1, 1, 4), (0, 0, 0, 0))
    raises(ValueError, "input has shape (2147483648, 1, 1, 4)", "2**31-1", x=huge, w=w_((1, 1, 4, 2)))


def test_output_beyond_what_can_be_allocated():
    x = np.lib.stride_tricks.as_strided(np.ones(1, F32), (2**20, 2**20, 2**20, 1), (0, 0, 0, 0))
    w = np.lib.stride_tricks.as_strided(np.ones(1, F32), (1, 1, 1, 2**20), (0, 0, 0, 0))
    raises(ValueError, "output would have shape (1048576, 1048576, 1048576, 1048576)", "2**62 bytes", x=x, w=w)


# --- data_format, backend, algorithm ------------------------------------------------------------

@pytest.mark.parametrize("value", ["NWHC", "CHWN", "", "NHWC ", None, 4])
def test_unknown_data_format(value, backend):
    raises(ValueError, f"data_format={value!r}", "NHWC", "NCHW", backend=backend, data_format=value)


@pytest.mark.parametrize("value", ["tpu", "NUMPY", "cuda"])
def test_unknown_backend(value):
    raises(ValueError, f"backend={value!r}", "numpy", backend=value)


@pytest.mark.parametrize("value", [None, 3])
def test_backend_not_a_string(value):
    raises(TypeError, f"backend={value!r}", backend=value)


def test_unknown_algorithm_lists_valid_ones(backend):
    msg = raises(ValueError, "algorithm='fft'", repr(backend), "'auto'", backend=backend, algorithm="fft")
    for name in get_backend(backend).algorithms():
        assert repr(name) in msg, f"{name!r} missing from: {msg}"


def test_algorithm_not_a_string(backend):
    raises(TypeError, "algorithm=None", "'auto'", backend=backend, algorithm=None)


REFUSAL_PROBES = [   # problems narrow algorithms refuse: a 3x3 grouped strided one, a depthwise, a 1x1
    (x_((1, 7, 7, 4)), w_((3, 3, 2, 4)), dict(strides=2, padding="SAME")),
    (x_((1, 7, 7, 4)), w_((5, 5, 1, 4)), dict(dilations=[1, 2], padding="SAME")),
    (x_((1, 7, 7, 4)), w_((1, 1, 4, 4)), {}),
    (x_((1, 64, 64, 4)), w_((9, 9, 4, 4)), dict(dilations=4, padding="SAME")),
]


def test_algorithm_that_cannot_run_the_problem(backend):
    """Each algorithm that refuses a probe problem raises ValueError quoting its own reason."""
    checked = 0
    for name, algo in get_backend(backend).algorithms().items():
        for x, w, kw in REFUSAL_PROBES:
            p = gpuconv.parse_problem(x.shape, x.dtype, w.shape, w.dtype, **kw)[0]
            why = algo.why_not(p)
            if why is None:
                continue
            raises(ValueError, f"algorithm={name!r}", "cannot run", why, x=x, w=w, backend=backend,
                   algorithm=name, **kw)
            checked += 1
            break
    if checked == 0:
        pytest.skip(f"every {backend} algorithm runs every probe problem")


# --- dtypes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("xd, wd", [("float32", "float64"), ("float16", "float32"), ("bfloat16", "float16"),
                                    ("float64", "bfloat16")])
def test_dtype_mismatch(xd, wd, backend):
    raises(TypeError, f"input dtype {xd}", f"filters dtype {wd}", "float16, bfloat16, float32, float64",
           x=x_(dtype=configs.np_dtype(xd)), w=w_(dtype=configs.np_dtype(wd)), backend=backend)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "complex64", "bool", "object", "<U1", "float128"])
@pytest.mark.parametrize("which", ["input", "filters", "both"])
def test_non_float_dtype(dtype, which, backend):
    if dtype == "float128" and not hasattr(np, "float128"):
        pytest.skip("no float128 on this platform")
    bad = np.dtype(dtype)
    x = x_().astype(bad) if which in ("input", "both") else x_()
    w = w_().astype(bad) if which in ("filters", "both") else w_()
    raises(TypeError, f"input dtype {x.dtype}", f"filters dtype {w.dtype}", "float32", x=x, w=w, backend=backend)


def test_integer_arrays_are_not_silently_converted(backend):
    """An int64 array keeps its dtype and is refused (lists of Python ints become float32, as in TF:
    tests/test_list_inputs.py)."""
    raises(TypeError, "input dtype int64", x=x_().astype(np.int64), w=w_().astype(np.int64), backend=backend)


@pytest.mark.parametrize("value", [[[1.0, 2.0], [3.0]], object()])
def test_not_array_like(value, backend):
    raises(TypeError, "input", x=value, backend=backend)


# ---- settings -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,fragment", [
    ({"numpy_bytes": 0}, "numpy_bytes=0"),
    ({"numpy_bytes": -5}, "numpy_bytes=-5"),
    ({"cuda_bytes": 1.5}, "cuda_bytes=1.5"),
    ({"cuda_bytes": True}, "cuda_bytes=True"),
])
def test_set_workspace_rejects_non_positive_or_non_int(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment) + ".*positive int"):
        gpuconv.set_workspace(**kwargs)


def test_set_workspace_sets_the_bounds(monkeypatch):
    monkeypatch.setattr(gpuconv.settings, "numpy_workspace_bytes", gpuconv.settings.numpy_workspace_bytes)
    monkeypatch.setattr(gpuconv.settings, "cuda_workspace_bytes", gpuconv.settings.cuda_workspace_bytes)
    gpuconv.set_workspace(numpy_bytes=1 << 20, cuda_bytes=2 << 20)
    assert (gpuconv.settings.numpy_workspace_bytes, gpuconv.settings.cuda_workspace_bytes) == (1 << 20, 2 << 20)


@pytest.mark.parametrize("name,value", [("GPUCONV_NUMPY_WORKSPACE", "lots"), ("GPUCONV_NUMPY_WORKSPACE", ""),
                                        ("GPUCONV_NUMPY_WORKSPACE", "0"), ("GPUCONV_CUDA_WORKSPACE", "-3"),
                                        ("GPUCONV_CUDA_INDEX64", "maybe")])
def test_malformed_environment_variable_warns_and_keeps_the_default(monkeypatch, name, value):
    from gpuconv.config import Settings
    monkeypatch.delenv(name, raising=False)
    default = Settings()
    monkeypatch.setenv(name, value)
    with pytest.warns(UserWarning, match=f"{name}={value!r} is not allowed.*using the default"):
        assert Settings() == default


def test_import_survives_a_malformed_environment_variable():
    env = dict(os.environ, GPUCONV_NUMPY_WORKSPACE="", GPUCONV_CUDA_INDEX64="maybe")
    r = subprocess.run([sys.executable, "-c", "import gpuconv; print(gpuconv.settings.numpy_workspace_bytes)"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(64 << 20)
    assert "GPUCONV_NUMPY_WORKSPACE=''" in r.stderr and "GPUCONV_CUDA_INDEX64='maybe'" in r.stderr


def test_set_workspace_accepts_numpy_integers(monkeypatch):
    monkeypatch.setattr(gpuconv.settings, "numpy_workspace_bytes", gpuconv.settings.numpy_workspace_bytes)
    gpuconv.set_workspace(numpy_bytes=np.int64(3 << 20))
    assert gpuconv.settings.numpy_workspace_bytes == 3 << 20
    assert type(gpuconv.settings.numpy_workspace_bytes) is int


def test_algorithms_of_auto_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"backend='auto' is not allowed for algorithms\(\).*picks a backend per "
                                         r"conv2d call.*expected one of \['cupy', 'emulator', 'numpy'\]"):
        gpuconv.algorithms("auto")


def test_conv2d_unknown_backend_lists_auto():
    with pytest.raises(ValueError, match=r"backend='gpu' is not allowed: expected 'auto' or one of"):
        gpuconv.conv2d(np.ones((1, 3, 3, 1), np.float32), np.ones((1, 1, 1, 1), np.float32), backend="gpu")


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_index64_environment_flag(monkeypatch, value, expected):
    from gpuconv.config import Settings
    monkeypatch.setenv("GPUCONV_CUDA_INDEX64", value)
    assert Settings().cuda_force_index64 is expected
