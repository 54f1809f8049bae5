"""Readers and writers for the challenge's TSV files and spdnn's HDF5 store."""
