"""spdnn: Sparse DNN Graph Challenge inference on CPUs, GPUs and MPI clusters."""

__version__ = "0.1.0"
