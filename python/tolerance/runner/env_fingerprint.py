"""An environment fingerprint of this box: what a difference between boxes may come from."""
from __future__ import annotations

import functools
import os
import platform
import socket
import sys
from typing import Any, Mapping

from tolerance.config.chips import THREAD_VARS

#: CPU features worth knowing when float results differ (a summary, not the full list)
_FLAGS = ("sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c",
          "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16",
          "amx_tile", "asimd", "fphp", "asimdhp", "sve", "sve2", "sme")
_ENV_VARS = THREAD_VARS + ("OPENBLAS_CORETYPE", "OPENBLAS_VERBOSE", "MKL_CBWR",
                           "MKL_ENABLE_INSTRUCTIONS", "NPY_DISABLE_CPU_FEATURES",
                           "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


@functools.lru_cache(maxsize=1)
def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and model in (None, "", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                    if "pni" in flags:
                        flags.add("sse3")
    except OSError:
        pass
    if sys.platform == "darwin":  # pragma: no cover - macOS
        try:
            import subprocess
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                   capture_output=True, text=True, timeout=5).stdout.strip() or model
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        usable = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": model, "flags": [f for f in _FLAGS if f in flags],
            "count": os.cpu_count(), "usable": usable}


@functools.lru_cache(maxsize=1)
def _numpy() -> dict[str, Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return {"version": None, "blas": None}
    blas: dict[str, Any] | None = None
    try:
        cfg = np.show_config(mode="dicts")  # numpy >= 1.26
        deps = cfg.get("Build Dependencies", {}) if isinstance(cfg, dict) else {}
        raw = deps.get("blas") or {}
        blas = {k: raw.get(k) for k in ("name", "version", "openblas configuration") if k in raw}
        simd = cfg.get("SIMD Extensions", {}) if isinstance(cfg, dict) else {}
        simd = {"baseline": list(simd.get("baseline", [])), "found": list(simd.get("found", []))}
    except Exception:  # noqa: BLE001 - older numpy: best effort
        simd = None
        info = getattr(getattr(np, "__config__", None), "blas_opt_info", None)
        if isinstance(info, dict):
            blas = {"libraries": info.get("libraries")}
    return {"version": np.__version__, "blas": blas, "simd": simd}


def environment_fingerprint(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """JSON-safe facts about this box: machine, CPU flags summary, Python, NumPy and its
    BLAS, and the thread/kernel variables of `env` (default: this process's environment;
    the runner passes os.environ overlaid with the box's env)."""
    from tolerance import __version__

    env = dict(os.environ if env is None else env)
    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "cpu": _cpu(),
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "numpy": _numpy(),
        "tolerance": __version__,
        "env": {k: env.get(k) for k in _ENV_VARS},
    }


def publishable_fingerprint(fp: Mapping[str, Any]) -> dict[str, Any]:
    """An environment fingerprint without what belongs to the operator's box alone: the
    thread/kernel/device variables (box-local knobs), the usable core count (the chip's
    affinity), the host name and the interpreter's path. What stays says what the box is
    (machine, CPU model and flags, Python, NumPy and its BLAS, tolerance)."""
    out = {k: v for k, v in fp.items() if k not in ("env", "hostname")}
    if isinstance(out.get("cpu"), Mapping):
        out["cpu"] = {k: v for k, v in out["cpu"].items() if k != "usable"}
    if isinstance(out.get("python"), Mapping):
        out["python"] = {k: v for k, v in out["python"].items() if k != "executable"}
    return out
