"""gpuconv: tf.nn.conv2d without a framework. NumPy on any host, hand-written CUDA kernels on NVIDIA GPUs."""
from .api import conv2d
from .backends import algorithms, available_backends
from .config import set_precision, set_workspace, settings
from .gradients import conv2d_backprop_filter, conv2d_backprop_input, conv2d_grads, conv2d_transpose
from .problem import ConvProblem, parse_problem
from .reference import conv2d_reference
from .tuning import tune
from .version import package_version as _package_version

__version__: str = _package_version()


def __getattr__(name: str):
    if name == "dask":  # gpuconv.dask needs the optional dask extra: imported on first use
        import importlib
        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'gpuconv' has no attribute {name!r}")


__all__ = ["conv2d", "conv2d_backprop_input", "conv2d_backprop_filter", "conv2d_transpose", "conv2d_grads", "algorithms", "available_backends", "set_workspace", "set_precision", "settings", "ConvProblem",
           "parse_problem", "conv2d_reference", "tune", "__version__"]
