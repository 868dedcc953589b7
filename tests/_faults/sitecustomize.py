"""Test-only fault injection for processes started by the tests (never shipped).

A test puts this directory on PYTHONPATH and sets TOLERANCE_TEST_KILL_BOX=NAME: the rank
whose box is NAME SIGKILLs itself when it enters the compare (every rank is past its run
by then), so the test sees a rank die mid-job. Nothing in the package knows of this.
"""
import importlib.abc
import importlib.util
import os
import sys

_BOX = os.environ.get("TOLERANCE_TEST_KILL_BOX")
_TARGET = "tolerance.collective.exchange"


def _patch(module):
    real = module.exchange

    def exchange(comm, sources, failures, *args, **kwargs):
        labels = [s.label.split("/")[0] for s in sources] + [f[0].split("/")[0] for f in failures]
        if _BOX in labels:
            os.kill(os.getpid(), 9)
        return real(comm, sources, failures, *args, **kwargs)

    module.exchange = exchange


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module):
            exec_module(module)
            _patch(module)

        loader.exec_module = patched
        return spec


if _BOX:
    sys.meta_path.insert(0, _Finder())
