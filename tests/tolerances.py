"""How close a convolution result must be to the float64 reference, and exactness bounds.

For every output element

    |y - ref| <= atol + c * u * |ref| + c' * u_acc * sqrt(R) * (|x| conv |w|)

u      unit roundoff of the output dtype: the one final rounding of the accumulated sum,
u_acc  unit roundoff of the accumulator (float32 for half types and float32, float64 for float64),
R      reduction length KH*KW*CG,
(|x| conv |w|)  the sum of the magnitudes of the terms, which rounding errors of the sum scale with.

sqrt(R) rather than R: rounding errors of a long sum behave like a random walk (Higham, "Accuracy and
Stability of Numerical Algorithms", ch. 4); c' = 2 leaves room for a plain sequential float32 sum of
positive terms (checked in test_conv2d.py), the worst case a correct kernel produces. A kernel that
accumulates in float16 exceeds it by orders of magnitude (also checked there).

Algorithms that do not compute the same sum of products (Winograd transforms the inputs and
filters first) get a larger c', derived below from their transform matrices, and no exactness check on
integer inputs.

Every bound here depends only on the inputs and the arithmetic, never on the host: TensorFlow's own
error (which changes with the oneDNN kernels a CPU gets) is a figure the benchmark reports, not a bound.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from gpuconv.dtypes import accumulator, unit_roundoff
from gpuconv.problem import ConvProblem
from gpuconv.reference import abs_conv_bound, conv2d_reference

C_OUT = 1.0            # c: one rounding of the result to the output dtype
C_ACC = 2.0            # c': accumulation, for algorithms that sum the products themselves
U_TF32 = 2.0 ** -11    # unit roundoff of TF32 (10 stored mantissa bits), for precision="tf32"


def winograd_amplification(m: int) -> float:
    """How much larger than (|x| conv |w|) the magnitudes inside Winograd F(m x m, 3x3) get.

    Y = A^T [(G g G^T) (.) (B^T d B)] A: every rounding error of the transforms and of the elementwise
    GEMMs is relative to the magnitudes flowing through them, |A^T| [(|G| |g| |G^T|) (.) (|B^T| |d| |B|)] |A|.
    For inputs and filters of even magnitude (|d| = |g| = 1, where (|x| conv |w|) = 3 per dimension) one
    dimension amplifies by max_i sum_j |A^T|_ij (|G| 1)_j (|B^T| 1)_j / 3 and the 2-D transform by its
    square: 7.1 for F(2x2) on points {0, 1, -1}, 97.4 for F(4x4) on {0, 1, -1, 1/2, -2}. (Inputs that
    are large only where the filter is small can be amplified more; the worst-case bound scales with
    max|x| * max|w| instead and is orders of magnitude looser. The tests' inputs are of even magnitude.)"""
    from gpuconv.backends.numpy import winograd as wg
    at, g, bt = wg.toom_cook(m, 3, wg.POINTS[m])
    one_dim = float((np.abs(at) @ ((np.abs(g) @ np.ones(3)) * (np.abs(bt) @ np.ones(m + 2)))).max()) / 3
    return one_dim ** 2


def accumulation_constant(algorithm: str, p: ConvProblem) -> float:
    """c' of the bound for an algorithm on p.

    Sum-of-products algorithms: C_ACC. Winograd ("winograd" = the tile the backend's rule picks for p,
    "winograd-f2" / "winograd-f4" = that tile forced): C_ACC times its amplification. Its error comes
    from a whole input tile, not one output's receptive field, so its scale is normwise (see error_bound).
    """
    if algorithm.startswith("winograd"):
        from gpuconv.backends.numpy import winograd as wg
        m = int(algorithm[-1]) if algorithm[-2:] in ("f2", "f4") else wg.tile_size(p)
        return C_ACC * winograd_amplification(m)
    return C_ACC


def is_exact(algorithm: str) -> bool:
    """True when the algorithm computes the plain sum of products (exact on small-integer inputs)."""
    return not algorithm.startswith("winograd")


def error_bound(x, w, p: ConvProblem, ref, algorithm: str = "auto") -> np.ndarray:
    """The per-element bound for results of p (x in p.input_shape, ref from conv2d_reference)."""
    dtype = np.dtype(p.dtype)
    u = unit_roundoff(dtype)
    u_acc = unit_roundoff(accumulator(dtype))
    c_acc = accumulation_constant(algorithm, p)
    atol = float(ml_dtypes.finfo(dtype).smallest_subnormal)   # a result that underflows
    scale = abs_conv_bound(x, w, p)
    if not is_exact(algorithm) and scale.size:
        scale = np.full_like(scale, np.max(scale))
    bound = atol + C_OUT * u * np.abs(ref) + c_acc * u_acc * np.sqrt(max(p.R, 1)) * scale
    if p.precision == "tf32" and dtype == np.float32:
        # each input rounded once to TF32 (u = 2^-11): every product off by at most 2u + u^2 of its
        # magnitude, in the worst case all in one direction
        bound = bound + (2 * U_TF32 + U_TF32 ** 2) * scale
    return bound


def max_exact_magnitude(dtype, R: int) -> int:
    """Largest m such that integer inputs in [-m, m] give sums that are exact in `dtype`.

    Every partial sum is bounded by m*m*R; integers up to 2**p (p = significand bits, implicit bit
    included) are exact in a binary float with p bits. The accumulator has at least as many bits as
    the output, so the output dtype decides. Returns 0 when even m = 1 is not exact.
    """
    p = ml_dtypes.finfo(np.dtype(dtype)).nmant + 1
    return int(min(3, np.floor(np.sqrt(2.0 ** p / max(R, 1)))))


def check_close(y, x, w, p: ConvProblem, algorithm: str = "auto", ref=None) -> str | None:
    """None when y is within the bound of the float64 reference; else a report of the worst element."""
    y4 = np.asarray(y).reshape(p.output_shape)
    x4 = np.asarray(x).reshape(p.input_shape)
    if ref is None:
        ref = conv2d_reference(x4, w, p)
    ref = np.asarray(ref, np.float64).reshape(p.output_shape)
    bound = error_bound(x4, w, p, ref, algorithm)
    yd = y4.astype(np.float64)
    err = np.abs(yd - ref)
    # Inf == Inf of the same sign is a match; NaN anywhere the reference is finite is a failure.
    same_inf = np.isinf(ref) & (yd == ref)
    both_nan = np.isnan(ref) & np.isnan(yd)
    ok = (err <= bound) | same_inf | both_nan
    if ok.all():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ok, 0.0, np.where(np.isfinite(err), err / bound, np.inf))
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return (f"{int((~ok).sum())} of {ok.size} elements exceed the bound ({algorithm}, {p.describe()}); "
            f"worst at {tuple(int(v) for v in i)}: got {yd[i]!r}, reference {ref[i]!r}, "
            f"|error| {err[i]:.3g} > bound {bound[i]:.3g} (ratio {ratio[i]:.3g}, R={p.R})")


def assert_close(y, x, w, p: ConvProblem, algorithm: str = "auto", ref=None) -> None:
    msg = check_close(y, x, w, p, algorithm, ref)
    assert msg is None, msg


def assert_exact(y, x, w, p: ConvProblem, ref=None) -> None:
    """Bitwise-equal values (as float64) to the reference; reports the first mismatch."""
    y4 = np.asarray(y).reshape(p.output_shape).astype(np.float64)
    if ref is None:
        ref = conv2d_reference(np.asarray(x).reshape(p.input_shape), w, p)
    ref = np.asarray(ref).reshape(p.output_shape)
    bad = y4 != ref
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(f"{int(bad.sum())} of {bad.size} elements differ from the exact reference "
                             f"({p.describe()}); first at {i}: got {y4[i]!r}, expected {ref[i]!r}")


def assert_result(y, x, w, p: ConvProblem, algorithm: str = "auto", exact: bool = False, ref=None) -> None:
    """The full contract of one conv2d result: NumPy array of the input's dtype, the input's batch shape
    followed by the output's spatial/channel dims, and values exact or within the bound."""
    x = np.asarray(x)
    assert isinstance(y, np.ndarray), f"expected a NumPy array, got {type(y).__name__}"
    assert y.dtype == p.dtype, f"output dtype {y.dtype} differs from the input dtype {p.dtype}"
    want = tuple(x.shape[:-3]) + tuple(p.output_shape[1:])
    assert y.shape == want, f"output shape {y.shape}, expected {want} ({p.describe()})"
    if exact:
        assert_exact(y, x, w, p, ref)
    else:
        assert_close(y, x, w, p, algorithm, ref)
