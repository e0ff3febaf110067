"""Runs under ``torchrun``: the process group, rows sharded across ranks, finished rows on disk.

recon's commands run unchanged under PyTorch's launcher::

    torchrun --nproc-per-node 4 -m recon.cli reconstruct scan.h5 -o out.h5

:func:`context` reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun) and joins the
process group: gloo for the object collectives recon needs (rows, statuses), plus NCCL for
tensors when the device is CUDA (one GPU per rank, ``cuda:LOCAL_RANK``). Without those variables
it is one process, exactly as before. (deepinv's ``DistributedContext`` does much the same but
offsets seeds by rank, which recon must not do: its streams are per row, not per rank.)

:func:`run_rows` is the one loop every command shares. The rows (keys such as ``(item,
sample)``) still to do are dealt to the ranks round-robin; all ranks advance in lock-step
rounds (each computes one chunk of rows, or nothing), and after each
round rank 0 gathers the finished rows and every rank learns whether any rank failed. Because
every row has its own random stream and operator, the merged result is bit-identical whatever
the number of ranks. A rank that fails stops every rank with one line naming the rank and its
rows (:class:`RankError`); a rank that dies leaves the others at most ``RECON_DIST_TIMEOUT``
seconds (default 1800) in a collective, and torchrun stops them sooner.

:class:`RowStore` keeps each finished chunk as one safetensors file, written atomically by the
rank that computed it; a rerun (any number of ranks, or one process) loads the rows every rank
can see and computes only the missing ones.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recon.errors import UserError
from recon.memory import AutoBatch

#: environment variable: seconds a rank waits in a collective before the run stops
TIMEOUT_ENV = "RECON_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0

Key = tuple[int, ...]
Row = dict[str, Any]  # tensors and JSON-able values


class RankError(UserError):
    """An error in one rank, raised on every rank: rank 0 reports it (one line), the others
    exit quietly with the same code (2 for a user error, 1 for anything else)."""

    def __init__(self, message: str, *, user: bool, quiet: bool) -> None:
        super().__init__(message)
        self.user, self.quiet = user, quiet


@dataclass(frozen=True)
class Context:
    """Where this process stands in the run: rank ``rank`` of ``world_size`` (one process:
    rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> str:
        """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per rank)."""
        return f"cuda:{self.local_rank}" if self.distributed and name == "cuda" else name

    def shard(self, seq: Sequence[Any]) -> list[Any]:
        """This rank's share of ``seq``, dealt round-robin."""
        return list(seq[self.rank :: self.world_size])

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None on the others)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def collective(self, fn: Callable[[], Any], what: str = "") -> Any:
        """``fn()`` on every rank; if it raised on any rank, every rank raises the same
        :class:`RankError` (the lowest failing rank's). One process: ``fn()`` as it is."""
        if not self.distributed:
            return fn()
        out, err = None, None
        try:
            out = fn()
        except Exception as exc:  # reported collectively below
            err = _describe(exc, what)
        self.raise_any(err)
        return out

    def raise_any(self, err: tuple[bool, str] | None, gathered: list[Any] | None = None) -> None:
        """Exchange one status per rank; raise :class:`RankError` if any rank has an error
        ``(is_user_error, message)`` (``gathered``: the statuses, already exchanged as the
        first element of each rank's tuple)."""
        if not self.distributed:
            return
        errs = [g[0] for g in gathered] if gathered is not None else self.all_gather(err)
        for r, e in enumerate(errs):
            if e is not None:
                user, msg = e
                raise RankError(
                    f"rank {r} of {self.world_size}: {msg}", user=user, quiet=not self.is_main
                )


SINGLE = Context()


def _describe(exc: BaseException, what: str) -> tuple[bool, str]:
    user = isinstance(exc, UserError)
    msg = str(exc) if user else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, RankError):
        return exc.user, msg
    return user, f"{what}: {msg}" if what else msg


def timeout_s() -> float:
    """Seconds a rank waits in a collective (``RECON_DIST_TIMEOUT``, default 1800)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: give seconds, e.g. 600") from None
    if not value > 0:
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: give a positive number of seconds")
    return value


def context(device: str = "cpu") -> Context:
    """The run's context from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); joins the process group on first use.
    Without ``WORLD_SIZE`` (or with 1) it is one process and touches nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(
            backend="cpu:gloo,cuda:nccl" if cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s()),
        )
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


# ------------------------------------------------------------------------------------------------
# finished rows on disk


_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_stamp(path: str | Path | None) -> list[Any] | None:
    """``[resolved path, size, mtime_ns, content digest]`` of a file (None if it is not one):
    finished rows of a scan are reused only while the scan is unchanged, by what it holds, not
    only by its name, size and time (a scan replaced by another of the same size and an old
    mtime would pass those). The digest is BLAKE2b of every byte (about 1 s per GB from the
    page cache, which the scan's own reading fills anyway), computed once per process and
    file state."""
    import hashlib

    p = Path(path) if path is not None else None
    if p is None or not p.is_file():
        return None
    st = p.stat()
    stamp = [str(p.resolve()), st.st_size, st.st_mtime_ns]
    # the cache is keyed by the inode's change time too, which no user can set back
    key = (*stamp, st.st_ino, st.st_ctime_ns)
    if key not in _DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        with p.open("rb") as f:
            while block := f.read(1 << 23):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return [*stamp, _DIGESTS[key]]


def rows_folder(output: str | Path, fingerprint: str) -> Path:
    """Where the finished rows of a run writing ``output`` are kept until it is written:
    ``.<output name>.rows/<fingerprint>/`` beside it."""
    out = Path(output)
    return out.parent / f".{out.name}.rows" / fingerprint


class RowStore:
    """Finished rows of one run in ``folder``: one safetensors file per computed chunk,
    ``r<rank>-<first key>.safetensors``, holding each row's tensors (``<n>.<name>``) and, in the
    metadata, its key and JSON values. Files are written atomically; one that cannot be read
    (a disk fault) is ignored and its rows are computed again."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def load(self) -> dict[Key, Row]:
        from safetensors import safe_open

        rows: dict[Key, Row] = {}
        if not self.folder.is_dir():
            return rows
        for path in sorted(self.folder.glob("r*.safetensors")):
            try:
                with safe_open(str(path), "pt") as fh:
                    meta = json.loads((fh.metadata() or {})["rows"])
                    got = {}
                    for n, entry in enumerate(meta):
                        row = dict(entry["values"])
                        for name in entry["tensors"]:
                            row[name] = fh.get_tensor(f"{n}.{name}")
                        got[tuple(entry["key"])] = row
            except Exception:  # unreadable: recompute its rows
                continue
            rows.update(got)
        return rows

    def save(self, rank: int, rows: dict[Key, Row]) -> None:
        from safetensors.torch import save_file

        from recon import io

        if not rows:
            return
        tensors: dict[str, Tensor] = {}
        meta = []
        for n, (key, row) in enumerate(rows.items()):
            names = [k for k, v in row.items() if isinstance(v, Tensor)]
            for name in names:
                tensors[f"{n}.{name}"] = row[name].detach().cpu().contiguous()
            values = {k: v for k, v in row.items() if not isinstance(v, Tensor)}
            meta.append({"key": list(key), "tensors": names, "values": values})
        first = "-".join(str(k) for k in next(iter(rows)))
        self.folder.mkdir(parents=True, exist_ok=True)
        io.atomic(
            self.folder / f"r{rank}-{first}.safetensors",
            True,
            lambda tmp: save_file(tensors, str(tmp), metadata={"rows": json.dumps(meta)}),
        )

    def clear(self, *, others: bool = False) -> None:
        """Remove the folder, and its parent (``.<output>.rows``) when no other run's rows
        remain there. ``others``: once the output is written, the rows other runs left for
        the same output (another config or seed, a run that lost a race) go too: they would
        only serve a rerun that overwrites this output."""
        shutil.rmtree(self.folder.parent if others else self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()


@dataclass
class RowsDone:
    """What :func:`run_rows` produced: ``rows`` (every row on rank 0; empty elsewhere), how
    many were ``resumed`` from the store, and the most rows one call took (this rank's)."""

    rows: dict[Key, Row]
    resumed: int
    rows_per_call: int


def run_rows(
    keys: Sequence[Key],
    compute: Callable[[list[Key]], dict[Key, Row]],
    *,
    batch_size: int | AutoBatch,
    ctx: Context = SINGLE,
    store: RowStore | None = None,
    on_rows: Callable[[int, int], None] | None = None,
    on_done: Callable[[dict[Key, Row]], None] | None = None,
    describe: Callable[[list[Key]], str] = lambda chunk: f"rows {chunk}",
) -> RowsDone:
    """Compute every row of ``keys`` across the ranks, resuming from ``store``.

    Args:
        keys: the rows, in order.
        compute: ``compute(chunk) -> {key: row}`` for a chunk of keys.
        batch_size: rows per ``compute`` call, or an :class:`recon.memory.AutoBatch`: the
            first call is one row whose measured peak memory sizes the later calls.
        ctx: the process group (:func:`context`).
        store: where finished chunks are kept for a rerun (None: nowhere).
        on_rows: progress ``(rows_done, rows_total)``, on rank 0.
        on_done: on rank 0, the rows finished in each round (e.g. to record them).
        describe: names a chunk in an error message (e.g. its items).
    """
    wanted = set(keys)
    found = {k: v for k, v in (store.load() if store else {}).items() if k in wanted}
    if ctx.distributed:  # the rows any rank can see (node-local disks)
        seen = ctx.gather(found)
        found = {k: v for part in seen for k, v in part.items()} if seen is not None else {}
        done_keys = set(ctx.broadcast(list(found) if ctx.is_main else None))
    else:
        done_keys = set(found)
    resumed = len(done_keys)
    mine = ctx.shard([k for k in keys if k not in done_keys])
    auto = batch_size if isinstance(batch_size, AutoBatch) else None
    size = 1 if auto is not None else int(batch_size)
    rows = dict(found) if ctx.is_main else {}
    if on_rows is not None and ctx.is_main:
        on_rows(resumed, len(keys))
    pos, more, largest = 0, True, 0
    while more:  # lock-step rounds until no rank has rows left
        if auto is not None and auto.measured:
            size = auto.rows_per_call(len(mine) - pos)
        chunk = mine[pos : pos + size]
        largest = max(largest, len(chunk))
        pos += len(chunk)
        out: dict[Key, Row] = {}
        err = None
        try:
            if chunk and auto is not None and not auto.measured:
                out = auto.probe(compute, chunk)
            elif chunk:
                out = compute(chunk)
            if store is not None:
                store.save(ctx.rank, out)
        except Exception as exc:
            if not ctx.distributed:
                raise
            err = _describe(exc, describe(chunk))
        parts = ctx.gather(out if err is None else {})
        if ctx.distributed:
            status = ctx.all_gather((err, pos < len(mine)))
            ctx.raise_any(err, gathered=status)
            more = any(left for _, left in status)
        else:
            more = pos < len(mine)
        if parts is not None:
            new = {k: v for part in parts for k, v in part.items()}
            rows.update(new)
            if on_done is not None and new:
                on_done(new)
        if on_rows is not None and ctx.is_main:
            on_rows(len(rows), len(keys))
    return RowsDone(rows, resumed, largest)
