"""The epoch plan: deterministic, every row once, and exact resume across any resizes."""
from collections import Counter

import pytest

from vlv_ray.data import order

MANIFEST = {"shards": [{"rows": 10, "row_groups": [4, 4, 2]}, {"rows": 7}, {"rows": 9, "row_groups": [9]}]}
BLOCKS = order.blocks_from_manifest(MANIFEST)
TOTAL = 26


def rows_of(segments) -> list[tuple[int, int]]:
    """(block, row) in serving order, rows mapped through the block's permutation (seed 0, epoch 0)."""
    out = []
    for s in segments:
        perm = order.row_permutation(0, EPOCH, s.block, BLOCKS[s.block].rows)
        out += [(s.block, int(perm[i])) for i in range(s.start, s.stop)]
    return out


EPOCH = 0


def test_blocks_follow_row_groups_and_old_manifests_read_whole_files():
    assert [(b.shard, b.group, b.rows) for b in BLOCKS] == [(0, 0, 4), (0, 1, 4), (0, 2, 2), (1, -1, 7), (2, 0, 9)]


def test_an_epoch_serves_every_row_once_and_depends_only_on_seed_and_epoch():
    parts = [order.rank_segments(BLOCKS, 0, {"epoch": 0}, 2, r) for r in range(2)]
    served = rows_of(parts[0]) + rows_of(parts[1])
    assert len(served) == TOTAL and len(set(served)) == TOTAL
    assert parts == [order.rank_segments(BLOCKS, 0, {"epoch": 0}, 2, r) for r in range(2)]
    assert parts != [order.rank_segments(BLOCKS, 0, {"epoch": 1}, 2, r) for r in range(2)]
    assert parts != [order.rank_segments(BLOCKS, 1, {"epoch": 0}, 2, r) for r in range(2)]
    # 26 rows over 3 ranks: 8 each, the remaining 2 sit this epoch out.
    three = [rows_of(order.rank_segments(BLOCKS, 0, {"epoch": 0}, 3, r)) for r in range(3)]
    assert [len(p) for p in three] == [8, 8, 8] and len(set(sum(three, []))) == 24


def test_resume_on_the_same_world_serves_exactly_the_rest():
    full = [rows_of(order.rank_segments(BLOCKS, 0, {"epoch": 0}, 2, r)) for r in range(2)]
    pos = {"epoch": 0, "world": 2, "consumed": [5, 7]}  # rank 1 dropped 2 undecodable rows
    rest = [rows_of(order.rank_segments(BLOCKS, 0, pos, 2, r)) for r in range(2)]
    assert rest == [full[0][5:], full[1][7:]]


@pytest.mark.parametrize("chain", [[(2, [5, 5]), (1, None)], [(2, [3, 4]), (3, [2, 1, 2]), (1, None)],
                                   [(1, [6]), (4, [1, 0, 2, 1]), (2, None)]])
def test_any_chain_of_resizes_serves_each_row_at_most_once(chain):
    """Consume some rows on each world size, resize, go on: nothing twice, nothing skipped
    beyond the remainder of each uneven cut."""
    pos, seen = {"epoch": 0}, []
    for world, consumed in chain:
        parts = [rows_of(order.rank_segments(BLOCKS, 0, pos, world, r)) for r in range(world)]
        if consumed is None:  # the last world size serves out the epoch
            seen += sum(parts, [])
            break
        seen += [row for r in range(world) for row in parts[r][:consumed[r]]]
        pos = order.resized(pos, world)
        pos = {**pos, "world": world, "consumed": [a + b for a, b in zip(pos.get("consumed") or [0] * world, consumed)]}
    counts = Counter(seen)
    assert max(counts.values()) == 1
    assert TOTAL - len(counts) < sum(w for w, _ in chain)  # at most one remainder (< world) per cut


def test_resized_records_the_old_cut_only_when_the_world_changes():
    pos = {"epoch": 3, "world": 2, "consumed": [4, 4]}
    assert order.resized(pos, 2) is pos
    assert order.resized({"epoch": 3}, 5) == {"epoch": 3}
    assert order.resized(pos, 1) == {"epoch": 3, "splits": [[2, [4, 4]]], "world": 1, "consumed": [0]}


def test_first_rows_keeps_the_manifests_first_rows_in_place():
    """data.max_images: the first N rows in manifest order; the last block keeps its first rows."""
    six = order.first_rows(BLOCKS, 6)
    assert [(b.shard, b.group, b.rows, b.stored_rows) for b in six] == [(0, 0, 4, 4), (0, 1, 2, 4)]
    assert order.first_rows(BLOCKS, None) == BLOCKS and order.first_rows(BLOCKS, TOTAL) == BLOCKS
    assert [b.rows for b in order.first_rows(BLOCKS, 11)] == [4, 4, 2, 1]
    # Every row of the subset is served once an epoch, whatever the seed: a shuffle of the same rows.
    served = [(s.block, int(order.row_permutation(0, 0, s.block, six[s.block].rows)[i]))
              for s in order.rank_segments(six, 0, {"epoch": 0}, 1, 0) for i in range(s.start, s.stop)]
    assert sorted(served) == [(0, r) for r in range(4)] + [(1, r) for r in range(2)]
    from vlv_ray.data.pipeline import job_blocks
    from vlv_ray.data.shards import DataError

    assert job_blocks("s3://b/ds", MANIFEST, 11) == order.first_rows(BLOCKS, 11)
    with pytest.raises(DataError, match=rf"^data.max_images: got {TOTAL + 1}, expected at most the {TOTAL} images "
                                        "s3://b/ds/manifest.json lists$"):
        job_blocks("s3://b/ds", MANIFEST, TOTAL + 1)
