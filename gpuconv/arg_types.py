"""Type aliases for the arguments of the public API (gpuconv.conv2d, parse_problem, conv2d_reference)."""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import numpy.typing as npt

# one int for every spatial dimension, or a list of 1, 2 or 4 ints (tf.nn.conv2d's forms)
IntOrInts = Union[int, Sequence[int]]
# "VALID", "SAME", or explicit [before, after] pairs for the four dimensions
Padding = Union[str, Sequence[Sequence[int]]]
# nested lists/tuples of Python numbers, as tf.nn.conv2d takes them (they become float32)
NestedNumbers = Sequence[Any]
# a NumPy array or nested lists; a CuPy array is accepted too (typed Any: CuPy is optional)
NumpyInput = Union[np.ndarray, NestedNumbers]
Shape = Sequence[int]
DTypeLike = npt.DTypeLike
