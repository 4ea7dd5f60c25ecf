"""Which rows each worker reads, in what order: a pure function of (seed, epoch, position).

The unit of reading is a *block*: one parquet row group of one shard (the manifest lists
each shard's row groups). An epoch's global order is

    blocks permuted by (seed, epoch), and within each block its rows permuted by
    (seed, epoch, block);

so shuffling costs no memory and every read is one row group. The epoch's rows are cut
into `world` contiguous parts of equal length, one per rank (the last
`total mod world` rows sit the epoch out). Rank r serves its part in order.

The data position saved in a checkpoint is, per rank, how many rows of its part were
consumed (delivered to a finished step, or dropped as undecodable). Resuming on the same
number of workers serves exactly the rest of each part. Resuming on a different number
re-cuts what is left: the unread tails of the old parts, concatenated in rank order,
into `world'` new parts. That re-cut is recorded (`splits`), so any chain of resizes
within an epoch replays exactly. No row is served twice within an epoch and none is
skipped, apart from the remainder of an uneven cut.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Block:
    shard: int  # index into the manifest's shard list
    group: int  # parquet row group within the shard; -1: the whole file
    rows: int  # rows used: the first `rows` of the group (all of them unless a limit cut it)
    stored: int | None = None  # rows the group holds, when a limit uses fewer (`first_rows`)

    @property
    def stored_rows(self) -> int:
        return self.rows if self.stored is None else self.stored


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of a block, counted in the block's permuted order for the epoch."""
    block: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def blocks_from_manifest(manifest: dict[str, Any]) -> list[Block]:
    """One block per row group; a shard recorded without `row_groups` is one block."""
    out = []
    for i, rec in enumerate(manifest["shards"]):
        groups = rec.get("row_groups")
        if not groups:  # written before row groups were recorded: read the whole file
            out.append(Block(i, -1, int(rec["rows"])))
            continue
        out += [Block(i, g, int(n)) for g, n in enumerate(groups) if n > 0]
    return out


def first_rows(blocks: Sequence[Block], n: int | None) -> list[Block]:
    """The blocks holding the dataset's first `n` rows in manifest order (shards, then row
    groups, then rows as stored): a deterministic subset read in place, no copy
    (`data.max_images`, at most the blocks' rows: `pipeline.job_blocks` checks it). The last
    block keeps only its first rows. None: every block."""
    if n is None:
        return list(blocks)
    out = []
    for b in blocks:
        if n <= 0:
            break
        out.append(b if b.rows <= n else Block(b.shard, b.group, n, b.rows))
        n -= b.rows
    return out


def row_permutation(seed: int, epoch: int, block: int, rows: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, block, 1]).permutation(rows)


def epoch_segments(blocks: Sequence[Block], seed: int, epoch: int) -> list[Segment]:
    order = np.random.default_rng([seed, epoch, 0]).permutation(len(blocks))
    return [Segment(int(b), 0, blocks[b].rows) for b in order]


def skip(segments: Sequence[Segment], n: int) -> list[Segment]:
    """The segments without their first `n` rows."""
    out = []
    for s in segments:
        if n >= s.rows:
            n -= s.rows
            continue
        out.append(Segment(s.block, s.start + n, s.stop))
        n = 0
    return out


def take(segments: Sequence[Segment], n: int) -> list[Segment]:
    """The first `n` rows of the segments."""
    out = []
    for s in segments:
        if n <= 0:
            break
        k = min(n, s.rows)
        out.append(Segment(s.block, s.start, s.start + k))
        n -= k
    return out


def cut(segments: Sequence[Segment], parts: int) -> list[list[Segment]]:
    """`parts` contiguous pieces of equal length; the remainder is left out."""
    per = sum(s.rows for s in segments) // parts
    return [take(skip(segments, r * per), per) for r in range(parts)]


def rank_segments(blocks: Sequence[Block], seed: int, position: dict[str, Any], world: int,
                  rank: int) -> list[Segment]:
    """What `rank` of `world` still has to serve in `position["epoch"]`.

    `position` = {"epoch": e, "splits": [[world_i, [consumed per rank]], ...],
    "world": w, "consumed": [per rank]}: `splits` are earlier cuts of this epoch that a
    resize ended, `world`/`consumed` the current cut; {"epoch": e} alone is a fresh epoch.
    """
    position = resized(position, world)
    remaining = epoch_segments(blocks, seed, position["epoch"])
    for w, consumed in position.get("splits", []):
        parts = cut(remaining, w)
        remaining = [s for r in range(w) for s in skip(parts[r], consumed[r])]
    part = cut(remaining, world)[rank]
    return skip(part, position["consumed"][rank]) if position.get("consumed") else part


def resized(position: dict[str, Any], world: int) -> dict[str, Any]:
    """The position as seen by a run on `world` workers (a re-cut is recorded if it changed)."""
    if position.get("consumed") is None or position.get("world") == world:
        return position
    return {"epoch": position["epoch"],
            "splits": [*position.get("splits", []), [position["world"], list(position["consumed"])]],
            "world": world, "consumed": [0] * world}
