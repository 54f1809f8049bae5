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


def resolve(name: str) -> str:
    """Return the backend `name` stands for: 'auto' becomes 'cuda' when a GPU is usable."""
    if name not in BACKENDS:
        raise SpdnnError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise SpdnnError("backend 'cuda': no usable CUDA GPU (needs CuPy and a device)")
    return name


def make_engine(name: str, threads: int | None = None):
    """Return a fresh engine for backend `name`; 'auto' picks CUDA when a GPU is usable."""
    name = resolve(name)
    if name == "cpu":
        from .cpu import CpuEngine

        return CpuEngine(threads)
    from .cuda import CudaEngine

    return CudaEngine()
