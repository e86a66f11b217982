"""The `gpuconv` command line: demo, info, and argparse's answers to bad flags."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

import gpuconv
from gpuconv import cli


def _errors(text: str) -> dict[str, float]:
    """{'TensorFlow ...' or 'the float64 reference': max error} from the demo's output."""
    out = {}
    for m in re.finditer(r"(?:max error)?\s+([0-9.e+-]+) against (TensorFlow [^ ]+|the float64 reference)", text):
        out[m.group(2)] = float(m.group(1))
    return out


def test_demo_numpy_float32_against_reference(capsys):
    assert cli.main(["demo", "--no-tf", "--repeats", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "backend    numpy" in out
    assert re.search(r"algorithm  (gemm|winograd|pointwise|depthwise):", out)
    assert "(100, 32, 32, 3) float32" in out and "(3, 3, 3, 16)" in out and "(100, 30, 30, 16) float32" in out
    assert re.search(r"median [0-9.]+ ms of 2 run\(s\)", out)
    err = _errors(out)
    # outputs reach ~30; float32 rounding of 27-term sums (or Winograd's transforms, which "auto" may
    # pick) stays below 1e-3, while any indexing mistake gives errors of order 1
    assert set(err) == {"the float64 reference"} and 0 <= err["the float64 reference"] < 1e-3


def test_demo_half_precision(capsys):
    assert cli.main(["demo", "--no-tf", "--repeats", "1", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "float16 NHWC" in out
    # one float16 rounding of outputs up to ~30 is at most 2^-6; accumulation is float32
    assert 0 < _errors(out)["the float64 reference"] <= 2.0 ** -6


def test_demo_against_tensorflow(capsys):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed: the demo compares with the float64 reference only")
    assert cli.main(["demo", "--repeats", "1"]) == 0
    err = _errors(capsys.readouterr().out)
    tf_keys = [k for k in err if k.startswith("TensorFlow")]
    assert len(tf_keys) == 1 and err[tf_keys[0]] < 1e-3 and err["the float64 reference"] < 1e-3


def test_demo_emulator_backend(capsys):
    why = gpuconv.available_backends()["emulator"]
    if why is not None:
        pytest.skip(f"emulator backend unusable: {why}")
    assert cli.main(["demo", "--no-tf", "--repeats", "1", "--backend", "emulator"]) == 0
    out = capsys.readouterr().out
    assert "backend    emulator" in out and _errors(out)["the float64 reference"] < 1e-4


def test_demo_unknown_algorithm_lists_valid_ones(capsys):
    assert cli.main(["demo", "--no-tf", "--algorithm", "fft"]) == 2
    err = capsys.readouterr().err
    assert "algorithm='fft'" in err and "'gemm'" in err


def test_demo_unusable_backend_says_why(capsys):
    why = gpuconv.available_backends()["cupy"]
    if why is None:
        pytest.skip("cupy is usable here")
    assert cli.main(["demo", "--no-tf", "--backend", "cupy"]) == 2
    assert why in capsys.readouterr().err


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"gpuconv {gpuconv.__version__}")
    for name, why in gpuconv.available_backends().items():
        assert re.search(rf"^  {name}\s+{'usable' if why is None else 'unusable: ' + re.escape(why)}", out, re.M)
    for algo in gpuconv.algorithms("numpy"):
        assert f"- {algo}:" in out
    assert re.search(r"^BLAS:\n  \S+", out, re.M)
    assert re.search(r"^CUDA headers .*: (found|not found)", out, re.M)
    assert re.search(r"^NVRTC: ", out, re.M) and re.search(r"^C\+\+ compiler: ", out, re.M)


def test_console_entry_point_runs_info():
    res = subprocess.run([sys.executable, "-m", "gpuconv", "info"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "backends:" in res.stdout


@pytest.mark.parametrize("argv, fragment", [
    (["demo", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    (["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["demo", "--backend", "opencl"], "argument --backend: invalid choice: 'opencl'"),
    (["demo", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["info", "--verbose"], "unrecognized arguments: --verbose"),
    (["kernels", "--arch", "sm_70"], "argument --arch: invalid choice: 'sm_70'"),
    (["launch"], "argument command: invalid choice: 'launch'"),
    ([], "the following arguments are required: command"),
])
def test_bad_flags_are_argparse_errors(argv, fragment, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    assert ei.value.code == 2
    assert fragment in capsys.readouterr().err


def test_demo_rejects_zero_repeats(capsys):
    assert cli.main(["demo", "--no-tf", "--repeats", "0"]) == 2
    assert "--repeats=0 is not allowed" in capsys.readouterr().err
