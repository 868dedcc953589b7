"""Console lines shared by `tolerance diff` and `tolerance run` (rows, summary, progress)."""
from __future__ import annotations

import math
import shutil
from typing import Iterable, Sequence, TextIO


def _num(x) -> str:
    if x is None:
        return "nan"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.2g}" if x == 0 else f"{x:.1e}"


def bounds_text(b) -> str:
    parts = [f"atol {b.atol:g}"] if b.atol or not (b.rtol or b.ulp is not None) else []
    if b.rtol:
        parts.append(f"rtol {b.rtol:g}")
    if b.ulp is not None:
        parts.append(f"ulp {b.ulp}")
    return ", ".join(parts)


def _tail(r: dict, b) -> str:
    if r["status"] == "unmeasured":
        return f"UNMEASURED ({r.get('reason')})"
    bits = [f"@ step {r['step']}" if r.get("step") is not None else "",
            f"rel {_num(r['max_rel'])}",
            f"ulp {r['max_ulp']}" if r.get("max_ulp") is not None else "",
            f"onset {r['onset']}" if r.get("onset") is not None else "",
            f"over {r['count_over']}/{r['size']}" if r.get("count_over") else ""]
    if r.get("nan_mismatch"):
        bits.append(f"NaN mismatch {r['nan_mismatch']}")
    if r.get("inf_mismatch"):
        bits.append(f"inf mismatch {r['inf_mismatch']}")
    verdict = "FAIL" if r["status"] == "fail" else "ok"
    return "  ".join(x for x in bits if x) + f"  {verdict} ({bounds_text(b)})"


def format_rows(rows: Sequence[dict], bounds_for, style: str = "diff") -> list[str]:
    """One aligned line per row. style 'diff': `a  b  key  max|a-b| ...`;
    style 'run': `max‖key[a] − key[b]‖ = ...`."""
    if style == "run":
        heads = [f"max‖{r['key']}[{r['a']}] − {r['key']}[{r['b']}]‖ =" for r in rows]
    else:
        wa = max((len(r["a"]) for r in rows), default=0)
        wb = max((len(r["b"]) for r in rows), default=0)
        wk = max((len(r["key"]) for r in rows), default=0)
        heads = [f"{r['a']:<{wa}}  {r['b']:<{wb}}  {r['key']:<{wk}}  max|a-b|" for r in rows]
    wh = max((len(h) for h in heads), default=0)
    out = []
    for h, r in zip(heads, rows):
        prefix = "(warn) " if r["status"] == "unmeasured" else ""
        value = "     nan" if r["status"] == "unmeasured" else f"{_num(r['max_abs']):>8}"
        out.append(f"{prefix}{h:<{wh}} {value}  {_tail(r, bounds_for(r['key']))}".rstrip())
    return out


def summary_line(rows: Iterable[dict], extra: str = "") -> str:
    rows = list(rows)
    n = {s: sum(1 for r in rows if r["status"] == s) for s in ("pass", "fail", "unmeasured")}
    worst = max((r["max_abs"] for r in rows if r["status"] != "unmeasured"
                 and isinstance(r["max_abs"], (int, float))), default=None)
    text = (f"summary: {len(rows)} rows: {n['fail']} fail, {n['pass']} pass, "
            f"{n['unmeasured']} unmeasured")
    if worst is not None:
        text += f"; worst max|a-b| {_num(worst)}"
    return text + (f"; {extra}" if extra else "")


class Progress:
    """A live status line on a terminal (stderr); silent when not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = False

    def update(self, text: str) -> None:
        if not self.live:
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
            self._shown = False
