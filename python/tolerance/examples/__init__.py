"""Example workloads the shipped specs run (`specs/lorenz.yaml`, `specs/stable.yaml`).

Each is a module with `main(ctx, out_dir)` (the `python: module:function` entry of a
spec) and a command line, `python -m tolerance.examples.<name> --out DIR`. They need
only NumPy; the BLAS kernel they go through is chosen by the box's env
(e.g. OPENBLAS_CORETYPE), which must be set before NumPy is imported.
"""
