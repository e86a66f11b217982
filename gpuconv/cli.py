"""The `gpuconv` command: demo, info, kernels (NVRTC report), sanitize, bench, tune.

Each command module exposes add_arguments(parser) and run(args) -> exit code; they are imported
only when their command runs, so `gpuconv demo` never pays for the benchmark's imports.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

COMMANDS = {
    "demo": ("gpuconv.demo", "run the seed articles' example on the best available backend"),
    "info": ("gpuconv.info", "version, backends (and why any is unusable), BLAS library and threads"),
    "kernels": ("gpuconv.backends.cuda.report", "compile every CUDA kernel with NVRTC and print ptxas' report"),
    "sanitize": ("gpuconv.sanitize_cli", "run every CUDA kernel on the emulator under memcheck, racecheck, initcheck, "
                 "synccheck and asynccheck (and --counters: memory efficiency)"),
    "bench": ("gpuconv.bench.runner", "benchmark gpuconv against TensorFlow, PyTorch, JAX and the seed approaches"),
    "tune": ("gpuconv.tune_cli", "autotune the CUDA kernels' configurations on this device for the bench's layers "
             "(or --layers) and cache the winners"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from . import __version__
    parser = argparse.ArgumentParser(prog="gpuconv", description="tf.nn.conv2d without a framework")
    parser.add_argument("--version", action="version", version=f"gpuconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=helptext, description=helptext)
               for name, (_, helptext) in COMMANDS.items()}
    argv = sys.argv[1:] if argv is None else list(argv)
    # the command's own options are added before parsing; argparse exits on --version, -h or no command
    name = argv[0] if argv and argv[0] in COMMANDS else parser.parse_args(argv).command
    module = importlib.import_module(COMMANDS[name][0])
    module.add_arguments(parsers[name])
    return int(module.run(parser.parse_args(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
