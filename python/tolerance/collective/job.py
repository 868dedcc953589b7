"""One replicated run of a stem over MPI: one rank per box (docs/run.md).

handshake -> run every box at once -> gather statuses -> streaming all-pairs compare ->
rank 0 builds the report. Every rank returns the same exit code. Errors that every rank
sees alike (config, box assignment, sync refusal) are agreed on and reported once by
rank 0; anything else raised on one rank aborts the whole job (`mpi.abort_on_error`).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from tolerance._errors import EXIT_ERROR, ToleranceError, say
from tolerance.collective.exchange import exchange
from tolerance.bootstrap import keeper
from tolerance.bootstrap.segments import is_mpi_segment, mapped_by_self
from tolerance.bootstrap._registry import install_handlers
from tolerance.collective.code_fingerprint import apply_push, code_fingerprint, make_push
from tolerance.collective.inputs import content_hash, parse_inputs, resolve_inputs
from tolerance.collective.handshake import (assign_boxes, check_hosts, make_rank_info,
                                            sync_problems, this_host)
from tolerance.collective.mpi import RankContext, abort_on_error, world
from tolerance.collective.sources import NpzBlockSource, participant_label
from tolerance.collective.watch import WATCH_ENV, RankLine, env_rank
from tolerance.compare.engine import EngineStats, outcome_rows
from tolerance.config.spec import with_run_overrides
from tolerance.runner import claim_run_dir, run_on_box

BOX_ENV = "TOLERANCE_BOX"
_STATUS_TAG = 7301  # point-to-point tag of "my box is done" messages (any unused tag)
_POLL_S = 0.05


@dataclass
class RunOutcome:
    """What rank 0 knows at the end of a run (other ranks get `exit_code` only)."""

    exit_code: int
    error: str | None = None              # one line, when the run stopped before comparing
    detail: list[str] = field(default_factory=list)  # extra lines (the sync table)
    run_id: str | None = None
    run_dir: Path | None = None
    stem: str = ""
    spec: object | None = None
    infos: list = field(default_factory=list)        # handshake dicts, by rank
    boxes: list = field(default_factory=list)        # BoxResult.to_dict(), by rank
    participants: list = field(default_factory=list)
    rows: list = field(default_factory=list)          # compare.rows.Row, in (key, a, b) order
    stats: EngineStats | None = None
    timings: dict = field(default_factory=dict)
    sync: bool = True
    keys: list = field(default_factory=list)          # the keys compared
    notes: list = field(default_factory=list)         # lines rank 0 prints before the rows
    line: object | None = None                        # the watch line, when launched
    push: bool = False                                # --sync push brought every box to one commit

    def close_line(self) -> None:
        """Say `bye` to the launcher: this rank ended normally."""
        if self.line is not None:
            self.line.bye()


def _agree(comm, problem: str | None) -> str | None:
    """Every rank learns the first problem any rank hit (so all stop together)."""
    problems = comm.allgather(problem)
    return next((p for p in problems if p), None)


def _end_box(line: RankLine, rank_hint: int):
    """What a rank does when its launcher is lost: end its chips and itself, leave nothing."""
    def on_lost(why: str) -> None:
        say(f"tolerance: error: {line.who}: lost the launcher ({why}); "
            "ending this box and its chips")
        try:
            from tolerance.bootstrap._registry import _close_all_at_exit  # noqa: PLC0415
            _close_all_at_exit()          # kill and reap every chip, unlink their segments
        except Exception:  # noqa: BLE001 - ending regardless
            pass
        for name in mapped_by_self():     # the MPI runtime's segments this rank maps
            if is_mpi_segment(name):
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                except OSError:
                    pass
        os._exit(EXIT_ERROR)
    return on_lost


def _open_line() -> RankLine | None:
    """Started by `tolerance launch`: say hello before MPI starts (MPI_Init may block on a
    peer that never started, and the launcher must still hear from this rank)."""
    value = os.environ.get(WATCH_ENV)
    if not value:
        return None
    box = os.environ.get(BOX_ENV) or "?"
    line = RankLine.open(value, rank=env_rank(), box=box, host=this_host(), pid=os.getpid())
    line.on_lost = _end_box(line, env_rank())
    line.wait_go()
    return line


def run_stem(stem: str, *, cluster_path: str | None, specs_dir: str | None, sync: bool = True,
             chunk_mb: float = 16.0, threads: int | None = None, debug: bool = False,
             progress: Callable[..., None] | None = None, run_dir: str | None = None,
             env: Mapping[str, str] | None = None, bounds_path: str | None = None,
             push: bool = False,
             finish: Callable[[RunOutcome], int] | None = None) -> RunOutcome:
    """One replicated run of `stem`, this process being one rank.

    finish: rank 0's last phase (print the rows, write the report files), given rank 0's
    outcome; returns the job's exit code, which every rank then gets in `exit_code`. It
    runs inside the same abort guard as every other phase, so no rank is left waiting on
    a rank 0 that failed: a ToleranceError (a report file the disk refuses) is one line
    and exit 2 on every rank; anything else aborts the job.

    run_dir: the run directory to use instead of claiming `runs/<stem>/<stamp>` (relative
    paths are taken below each box's root); a box's own directory in it must not exist.
    env: variables set for the workload on every box, over the box's own env (they are
    part of the run's identity, like the spec's env). bounds_path: a calibrated bounds
    file (`tolerance calibrate`) whose bounds apply to the keys the spec leaves unbounded;
    rank 0 reads it with the other inputs (a launched job's launcher did already: its
    inputs carry it), so no other box reads it.
    """
    line = _open_line()
    comm = world()
    rank, nranks = comm.Get_rank(), comm.Get_size()
    ctx = RankContext(comm)
    ctx.line = line
    t0 = time.monotonic()
    with abort_on_error(ctx, debug=debug):
        outcome = _run_stem(comm, ctx, line, stem, cluster_path, specs_dir, sync, chunk_mb,
                            threads, progress, run_dir, env, bounds_path, push, t0)
        outcome.line = line
        if finish is not None:
            # 6. report: rank 0 alone, every rank waits for its exit code.
            code = outcome.exit_code
            if rank == 0:
                if line is not None:
                    line.phase("reporting")
                try:
                    code = finish(outcome)
                except ToleranceError as exc:
                    say(f"tolerance: error: {exc}")
                    code = EXIT_ERROR
            outcome.exit_code = comm.bcast(code, root=0)
        for name in filter(is_mpi_segment, mapped_by_self()):
            keeper.release_segment(name)  # a normal end: MPI_Finalize removes its own
        return outcome


def _run_stem(comm, ctx, line, stem, cluster_path, specs_dir, sync, chunk_mb, threads,
              progress, run_dir, env, bounds_path, push, t0) -> RunOutcome:
    rank, nranks = comm.Get_rank(), comm.Get_size()
    # 0. inputs: from the launcher, or resolved by rank 0 and broadcast.
    problem = None
    inputs = line.inputs if line is not None else None
    if line is not None and bounds_path is not None:
        problem = ("--bounds: give it to `tolerance launch`, which carries the file to "
                   "every box (not after --)")
    if line is None and rank == 0:
        try:
            inputs = resolve_inputs(stem, cluster_path, specs_dir, bounds_path)
        except ToleranceError as exc:
            problem = str(exc)
    if line is None:
        inputs, problem = comm.bcast((inputs, problem), root=0)
    if problem is None:
        try:
            cluster, spec = parse_inputs(inputs)
        except ToleranceError as exc:
            problem = str(exc)
    if problem is None:
        try:
            spec = with_run_overrides(spec, env=env)
        except ToleranceError as exc:
            problem = str(exc)
    problem = _agree(comm, problem)
    if problem:
        return RunOutcome(EXIT_ERROR, error=problem, stem=stem, line=line)
    where = str(cluster.path or "cluster.yaml")
    names = list(cluster.names)
    overrides = comm.allgather(os.environ.get(BOX_ENV) or None)
    try:
        chosen = assign_boxes(names, nranks, overrides, where)
    except ToleranceError as exc:
        return RunOutcome(EXIT_ERROR, error=str(exc), stem=stem, line=line)
    box = cluster.box(chosen[rank])
    ctx.box = box.name
    if push:  # --sync push: every box checks the controller's commit out first
        problem = None
        shipped = inputs.get("push") if line is not None else None
        if line is None and rank == 0:
            try:
                shipped = make_push(box.root)   # by hand: rank 0's checkout is the controller's
            except ToleranceError as exc:
                problem = str(exc)
        if line is None:
            shipped, problem = comm.bcast((shipped, problem), root=0)
        if problem is None and not shipped:
            problem = "--sync push: the launcher sent no commit (launch with --sync push)"
        if problem is None:
            if line is not None:
                line.phase("checking out the pushed commit")
            problem = apply_push(box.root, shipped, box.name)
        problem = _agree(comm, problem)
        if problem:
            return RunOutcome(EXIT_ERROR, error=problem, stem=stem, line=line)
    outcome = _run_as_box(comm, ctx, cluster, spec, box, sync, chunk_mb, threads,
                          progress, t0, line, inputs, run_dir)
    outcome.push = push
    return outcome


def _run_as_box(comm, ctx, cluster, spec, box, sync, chunk_mb, threads, progress, t0, line,
                inputs, given_run_dir=None):
    rank = comm.Get_rank()
    stem = spec.stem
    where = str(cluster.path or "cluster.yaml")
    names = list(cluster.names)
    # 1. handshake.
    if line is not None:
        line.phase("handshake")
    info = make_rank_info(rank, box.name, code_fingerprint(box.root, spec.code),
                           content_hash(inputs))
    infos = comm.allgather(info)
    mapped = mapped_by_self()  # MPI is up: its segments are mapped by now
    for name in filter(is_mpi_segment, mapped):
        keeper.guard_segment(name, shared=True)  # unlinked if this rank dies (no launcher)
    if line is not None:
        line.shm(mapped)  # the launcher sweeps only this job's segments
    problem = None
    try:
        check_hosts(infos, {b.name: b.host for b in cluster.boxes}, where)
    except ToleranceError as exc:
        problem = str(exc)
    problem = _agree(comm, problem)
    if problem:
        return RunOutcome(EXIT_ERROR, error=problem, stem=stem)
    table = sync_problems(infos)
    if table and sync:
        return RunOutcome(EXIT_ERROR, error=table[0].rstrip(":"), detail=table[1:], stem=stem,
                          infos=[i.to_dict() for i in infos])
    t_handshake = time.monotonic()

    # 3. one run id for every box; each box claims its own directory under its root.
    problem = None
    if given_run_dir is not None:
        run_dir = Path(box.root) / given_run_dir  # an absolute path stays as it is
        run_id = run_dir.name
    else:
        run_id = None
        if rank == 0:
            try:
                run_id = claim_run_dir(box.root, stem).name
            except ToleranceError as exc:  # told to every rank: none waits for rank 0
                problem = str(exc)
        run_id, problem = comm.bcast((run_id, problem), root=0)
        run_dir = Path(box.root) / "runs" / stem / (run_id or "")
    if problem is None:
        try:  # rank 0 made it; another root may not have it
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"box {box.name}: {run_dir}: cannot create ({exc.strerror})"
    problem = _agree(comm, problem)
    if problem:
        return RunOutcome(EXIT_ERROR, error=problem, stem=stem,
                          infos=[i.to_dict() for i in infos])
    if line is not None:
        if rank == 0:
            line.note(run_id=run_id, run_dir=str(run_dir))
        line.phase("running")

    # 4. run every box at once; rank 0 follows the others' states.
    result = _run_on_box_following(comm, spec, box, run_dir, names, progress)
    boxes = comm.gather(result.to_dict(), root=0)
    t_run = time.monotonic()
    if line is not None:
        line.phase("comparing")

    # 5. streaming all-pairs compare.
    sources, failures = [], []
    multi = len(box.chips) > 1
    for chip in result.chips:
        label = participant_label(box.name, chip.chip, multi)
        if chip.status == "finished" and chip.output:
            try:
                sources.append(NpzBlockSource(label, chip.output))
            except ToleranceError as exc:  # malformed output: an error, not a row
                failures.append((label, f"box {box.name} chip {chip.chip} output "
                                        f"unreadable: {exc}"))
        else:
            failures.append((label, f"box {box.name} chip {chip.chip} {chip.status}"
                                    f"{': ' + chip.reason if chip.reason else ''}"))
    keys, notes = _keys_to_compare(comm, spec, sources)
    participants, outcomes, stats = exchange(
        comm, sources, failures, keys, spec.bounds_for, spec.steps_axis,
        int(chunk_mb * (1 << 20)), threads=threads,
        progress=(lambda key, b, nb: progress(f"comparing {key}: block {b + 1}/{nb}",
                                              event=b == 0 and nb > 1))
        if progress else None)
    for s in sources:
        s.close()
    t_cmp = time.monotonic()
    if rank != 0:
        return RunOutcome(0)
    rows = outcome_rows(outcomes, [p.label for p in participants], keys, spec.bounds_for)
    return RunOutcome(
        0, run_id=run_id, run_dir=run_dir, stem=stem, spec=spec,
        infos=[i.to_dict() for i in infos], boxes=boxes, participants=participants,
        rows=rows, stats=stats, sync=sync, keys=keys, notes=notes,
        timings={"handshake_s": t_handshake - t0, "run_s": t_run - t_handshake,
                 "compare_s": t_cmp - t_run, "total_s": time.monotonic() - t0})


def _keys_to_compare(comm, spec, sources) -> tuple[list[str], list[str]]:
    """The spec's keys; with none listed, every key of any box's output, common ones first
    (a key some outputs lack gives unmeasured rows, as in `tolerance diff`), and the lines
    that say so."""
    if spec.keys is not None:
        return list(spec.keys), []
    per_source = [k for part in comm.allgather([s.keys() for s in sources]) for k in part]
    seen: list[str] = []
    for ks in per_source:
        seen += [k for k in ks if k not in seen]
    common = [k for k in seen if all(k in ks for ks in per_source)]
    partial = [k for k in seen if k not in common]
    notes = [f"keys: every key common to all boxes' outputs (the spec lists none): "
             f"{', '.join(common) if common else '(none)'}"]
    if partial:
        notes.append(f"(warn) keys in some outputs only (unmeasured where missing): "
                     f"{', '.join(partial)}")
    return common + partial, notes


def _run_on_box_following(comm, spec, box, run_dir, names, progress):
    """run_on_box in a worker thread; the main thread alone talks MPI (funneled)."""
    holder: dict = {}

    def work() -> None:
        try:
            holder["result"] = run_on_box(spec, box, run_dir)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            holder["error"] = exc

    install_handlers()  # the chips are made in the worker: Ctrl-C/SIGTERM still end them
    t = threading.Thread(target=work, name=f"run-box-{box.name}", daemon=True)
    t.start()
    rank, nranks = comm.Get_rank(), comm.Get_size()
    if rank != 0:
        t.join()
        if "error" in holder:
            raise holder["error"]
        comm.send((box.name, holder["result"].status), dest=0, tag=_STATUS_TAG)
        return holder["result"]
    from mpi4py import MPI  # noqa: PLC0415 - already initialized by world()

    states = {n: "running" for n in names}
    last: dict = {}
    started = time.monotonic()
    pending = nranks - 1
    mine_done = False
    while pending or not mine_done:
        if not mine_done and not t.is_alive():
            mine_done = True
            if "error" in holder:
                raise holder["error"]
            states[box.name] = holder["result"].status
        while pending and comm.Iprobe(source=MPI.ANY_SOURCE, tag=_STATUS_TAG):
            name, status = comm.recv(source=MPI.ANY_SOURCE, tag=_STATUS_TAG)
            states[name] = status
            pending -= 1
        if progress:
            changed = states != last
            last = dict(states)
            progress(f"running {time.monotonic() - started:5.1f} s  " +
                     "  ".join(f"{n}: {s}" for n, s in states.items()), event=changed)
        if pending or not mine_done:
            time.sleep(_POLL_S)
    return holder["result"]


__all__ = ["RunOutcome", "run_stem"]
