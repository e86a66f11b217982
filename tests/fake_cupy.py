"""A stand-in for CuPy whose kernels run on the emulator, so the cupy backend's own code (module
options, caches, device handling, shared-memory opt-in, the kernel call) runs without a GPU.

It refuses what the CUDA driver refuses and records what a test needs to see: every module load and
get_function, the current device at each launch, any silent copy between devices, every read of device
data by the host (("d2h", how): .get(), asnumpy, bool/float/int/item() of a device array) and every
wait for the device (("sync", what): stream, device and event synchronize). Events time with
perf_counter: the emulator runs a launch before the call returns."""
from __future__ import annotations

import time
import types

import numpy as np

from gpuconv.backends.cuda import emulator
from gpuconv.backends.cuda.launch import SHARED_WITHOUT_OPTIN, Launch
from gpuconv.backends.cuda.signature import compiled_limits, entries_of
from gpuconv.backends.cuda.sources import kernel_files, load_source

OPTIN_LIMIT = 227 * 1024  # sm_90's MaxSharedMemoryPerBlockOptin


class DeviceArray(np.ndarray):
    """A NumPy array that, like a CuPy array, lives on a device and must be fetched with .get()."""
    __module__ = "cupy"   # gpuconv recognises CuPy arrays by their type's module

    def __array_finalize__(self, obj):
        self._device = getattr(obj, "_device", None)

    @property
    def device(self):  # NumPy 2's ndarray.device ("cpu") is read-only: this one is the stand-in's Device
        return self._device

    def _log(self, how: str) -> None:
        if self._device is not None:
            self._device.state.calls.append(("d2h", how))

    def get(self, *args, **kwargs):
        self._log("get")
        return np.asarray(self).copy()

    def __bool__(self):
        self._log("bool")
        return bool(np.asarray(self))

    def __float__(self):
        self._log("float")
        return float(np.asarray(self))

    def __int__(self):
        self._log("int")
        return int(np.asarray(self))

    def item(self, *args):
        self._log("item")
        return np.asarray(self).item(*args)


class Device:
    """cupy.cuda.Device: a context manager that makes its device current; Device() is the current one."""

    def __init__(self, state, id=None):
        self.state = state
        self.id = state.current if id is None else id
        self.attributes = {"MaxThreadsPerBlock": 1024, "MaxSharedMemoryPerBlockOptin": OPTIN_LIMIT}
        self.compute_capability = getattr(state, "compute_capability", "90")  # CuPy's form: "90" for sm_90

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id

    def __enter__(self):
        self.state.stack.append(self.state.current)
        self.state.current = self.id
        return self

    def __exit__(self, *exc):
        self.state.current = self.state.stack.pop()
        return False

    def synchronize(self):
        self.state.calls.append(("sync", "device"))


class Stream:
    """cupy.cuda.Stream: only its synchronize matters here (logged)."""

    def __init__(self, state):
        self.state = state

    def synchronize(self):
        self.state.calls.append(("sync", "stream"))


class Event:
    """cupy.cuda.Event: record() notes perf_counter; synchronize() is a logged wait."""

    def __init__(self, state):
        self.state, self.t = state, None

    def record(self, stream=None):
        self.state.calls.append(("event", "record"))
        self.t = time.perf_counter()

    def synchronize(self):
        self.state.calls.append(("sync", "event"))


def _elapsed_ms(start: Event, end: Event) -> float:
    assert start.t is not None and end.t is not None, "elapsed time of an event that was never recorded"
    return (end.t - start.t) * 1e3


def _file_of(code: str) -> str:
    for f in kernel_files():
        if load_source(f.stem) == code:
            return f.stem
    raise AssertionError("the module's code is not one of kernels/*.cu as load_source gives it")


class Kernel:
    def __init__(self, state, module, name):
        self.state, self.module, self.name = state, module, name
        self.shared_size_bytes = compiled_limits(module.file, name, module.defines).static_shared
        # as the driver: without the opt-in, static + dynamic may reach 48 KB
        self.max_dynamic_shared_size_bytes = SHARED_WITHOUT_OPTIN - self.shared_size_bytes

    def __call__(self, grid, block, args, shared_mem=0):
        state = self.state
        state.calls.append(("launch", self.name, grid, block, shared_mem, state.current))
        assert self.module.device == state.current, "a module runs only on the device it was loaded on"
        assert block[0] * block[1] * block[2] <= 1024, "CUDA refuses blocks over 1024 threads"
        assert shared_mem <= self.max_dynamic_shared_size_bytes, \
            "CUDA refuses dynamic shared memory over max_dynamic_shared_size_bytes"
        structs = [a for a in args if isinstance(a, np.ndarray) and a.dtype.names]
        assert all(a.shape == (1,) for a in structs), "structs go as 1-element arrays"
        assert not any(isinstance(a, np.void) for a in args)
        for a in args:
            if isinstance(a, DeviceArray):
                assert a.device.id == state.current, f"array on device {a.device.id} passed to a launch on {state.current}"
        args = tuple(a[0] if isinstance(a, np.ndarray) and a.dtype.names else a for a in args)
        self.module.emulated.launch(Launch(self.module.file, self.name, grid, block, shared_mem, args,
                                           self.module.defines))


def make_fake_cupy(calls: list, nvrtc_error: Exception | None = None):
    state = types.SimpleNamespace(current=0, stack=[], calls=calls)

    class RawModule:
        def __init__(self, code, options):
            calls.append(("RawModule", options, state.current))
            self.code, self.device, self.file = code, state.current, _file_of(code)
            self.defines = tuple((k, int(v)) for k, v in
                                 (o[2:].split("=") for o in options if o.startswith("-D")))

        def compile(self):
            self.emulated = emulator.load_module(self.file, self.defines)

        def get_function(self, name):
            calls.append(("get_function", name))
            assert name in entries_of(self.file), f"{name} is not in {self.file}.cu"
            return Kernel(state, self, name)

    def on_device(src, out):
        if isinstance(src, DeviceArray) and src.device.id != state.current:
            calls.append(("copy", src.device.id, state.current))   # what CuPy would do silently
        v = out.view(DeviceArray)
        v._device = Device(state)
        return v

    def getVersion():
        if nvrtc_error is not None:
            raise nvrtc_error
        return (13, 0)

    def asnumpy(a, *args, **kwargs):
        if isinstance(a, DeviceArray):
            a._log("asnumpy")
        return np.array(a)

    runtime = types.SimpleNamespace(
        deviceSynchronize=lambda: calls.append(("sync", "runtime")),
        getDeviceProperties=lambda id: {"name": b"Fake GPU", "major": 9, "minor": 0},
        runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000)
    stream = Stream(state)
    ns = types.SimpleNamespace(
        RawModule=RawModule, is_available=lambda: True, asnumpy=asnumpy,
        cuda=types.SimpleNamespace(Device=lambda id=None: Device(state, id), nvrtc=types.SimpleNamespace(getVersion=getVersion),
                                   Stream=lambda *a, **k: Stream(state), get_current_stream=lambda: stream,
                                   Event=lambda *a, **k: Event(state), get_elapsed_time=_elapsed_ms, runtime=runtime),
        empty=lambda *a, **k: on_device(None, np.empty(*a, **k)),
        zeros=lambda *a, **k: on_device(None, np.zeros(*a, **k)),
        asarray=lambda a, *r, **k: on_device(a, np.asarray(a, *r, **k)),
        ascontiguousarray=lambda a, *r, **k: on_device(a, np.ascontiguousarray(a, *r, **k)),
        state=state)
    ns.on = lambda device, a: _place(ns, device, a)
    return ns


def _place(ns, device: int, a):
    """`a` as an array on `device` (cupy.asarray inside `with Device(device)`)."""
    with ns.cuda.Device(device):
        return ns.asarray(a)
