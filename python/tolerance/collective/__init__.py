"""collective layer: mpi4py ranks <-> boxes, handshake, gathered statuses, and the
all-pairs streaming compare across ranks (docs/run.md).

Importing this package does not initialize MPI; `collective.mpi.world()` does, and only
the `run` command calls it.
"""
