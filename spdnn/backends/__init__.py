"""Backends: where the layer loop runs. GPU imports happen only when a GPU is asked for."""

from __future__ import annotations

from ..errors import SpdnnError

BACKENDS = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Return whether CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "no GPU"
        return False


def make_engine(name: str, threads: int | None = None):
    """Return a fresh engine for backend `name`; 'auto' picks CUDA when a GPU is usable."""
    if name == "auto":
        name = "cuda" if cuda_available() else "cpu"
    if name == "cpu":
        from .cpu import CpuEngine

        return CpuEngine(threads)
    if name == "cuda":
        if not cuda_available():
            raise SpdnnError("backend 'cuda': no usable CUDA GPU (needs CuPy and a device)")
        from .cuda import CudaEngine

        return CudaEngine()
    raise SpdnnError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
