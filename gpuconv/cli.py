"""The `gpuconv` command: demo, info, kernels (NVRTC report), bench.

Each command module exposes add_arguments(parser) and run(args) -> exit code; they are imported
only when their command runs, so `gpuconv demo` never pays for the benchmark's imports.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("gpuconv.demo", "run the seed articles' example on the best available backend"),
    "info": ("gpuconv.info", "version, backends (and why any is unusable), BLAS library and threads"),
    "kernels": ("gpuconv.backends.cuda.report", "compile every CUDA kernel with NVRTC and print ptxas' report"),
    "bench": ("gpuconv.bench.runner", "benchmark gpuconv against TensorFlow, PyTorch, JAX and the seed approaches"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpuconv", description="tf.nn.conv2d without a framework")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=helptext, description=helptext)
               for name, (_, helptext) in COMMANDS.items()}
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv and argv[0] in COMMANDS else None
    module = importlib.import_module(COMMANDS[name][0]) if name else None
    if module is not None:
        module.add_arguments(parsers[name])
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
