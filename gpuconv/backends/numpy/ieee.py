"""The floating-point error state the NumPy backend computes under."""
from __future__ import annotations

import numpy as np


def ieee():
    """NaN and Inf results are IEEE arithmetic's answers (Inf * 0 = NaN, overflow = Inf), part of the
    contract, not something to warn a user about. np.errstate is per thread: enter it in each worker."""
    return np.errstate(all="ignore")
