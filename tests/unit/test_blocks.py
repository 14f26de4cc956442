"""condure/blocks.py: the pool of spare buffer blocks (connmgr.md 3.2)."""
from __future__ import annotations

import pytest

from condure.blocks import BlockBudget
from condure.config import Config
from condure.workers import worker_config


def budget(cfg: Config) -> BlockBudget:
    return BlockBudget.for_config(cfg.buffer_size, cfg.stream_maxconn, cfg.blocks_max,
                                  cfg.connection_blocks_max)


def test_defaults_give_nothing_to_borrow() -> None:
    b = budget(Config())
    assert (b.spare, b.free, b.max_capacity) == (0, 0, 8192)
    assert b.grow(8192) == 8192  # a head stays --buffer-size, as in condure


def test_raised_blocks_max_alone_gives_no_allowance() -> None:
    """Both options must be raised (connmgr.md 3.2)."""
    b = budget(Config(stream_maxconn=10, blocks_max=40))
    assert b.spare == 20
    assert b.grow(8192) == 8192


def test_raised_allowance_alone_has_an_empty_pool() -> None:
    b = budget(Config(stream_maxconn=10, connection_blocks_max=4))
    assert b.spare == 0
    assert b.grow(8192) == 8192


def test_scenario_18_limits() -> None:
    """--stream-maxconn 10 --blocks-max 40 --connection-blocks-max 4: a head
    may reach 8192 x 3 = 24576 bytes."""
    b = budget(Config(stream_maxconn=10, blocks_max=40, connection_blocks_max=4))
    assert (b.spare, b.max_capacity) == (20, 24576)
    c = b.grow(8192)
    assert c == 16384
    c = b.grow(c)
    assert c == 24576
    assert b.grow(c) == 24576  # the allowance is used up, the pool is not
    assert b.free == 18
    assert b.release(c) == 8192
    assert b.free == 20


def test_one_spare_block_is_shared_scenario_19() -> None:
    b = budget(Config(stream_maxconn=10, blocks_max=21, connection_blocks_max=4))
    first = b.grow(8192)
    assert first == 16384
    assert b.grow(8192) == 8192  # the second head finds the pool empty
    assert b.borrowed == 1
    b.release(first)
    assert b.grow(8192) == 16384


def test_release_is_idempotent_through_the_capacity() -> None:
    b = BlockBudget(100, 5, 3)
    c = b.grow(b.grow(b.grow(100)))
    assert c == 400 and b.free == 2
    c = b.release(c)
    assert c == 100 and b.free == 5
    assert b.release(c) == 100 and b.free == 5  # the base holds nothing to give back


def test_release_never_raises_the_pool_above_its_size() -> None:
    b = BlockBudget(100, 1, 3)
    b.release(400)  # a capacity that never borrowed (a bug elsewhere) cannot mint blocks
    assert b.free == 1


def test_many_heads_never_take_more_than_the_pool() -> None:
    b = BlockBudget(10, 7, 3)
    caps = [10] * 5
    for _ in range(4):
        caps = [b.grow(c) for c in caps]
    assert sum((c - 10) // 10 for c in caps) == 7
    assert b.free == 0
    assert max(caps) <= b.max_capacity == 40
    for c in caps:
        b.release(c)
    assert b.free == 7


@pytest.mark.parametrize("args", [(0, 1, 1), (10, -1, 1), (10, 1, -1)])
def test_bad_sizes_are_refused(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        BlockBudget(*args)


@pytest.mark.parametrize("workers,maxconn,blocks,per_worker_spare", [
    (1, 10, 21, 1),
    (2, 10, 21, 0),  # one spare block cannot be split: neither worker gets it
    (2, 10, 40, 10),
    (3, 10, 40, 6),  # 20 spare // 3; the remainder (2) goes unused
    (3, 10, None, 0),
])
def test_workers_share_the_pool_without_overcommitting(workers: int, maxconn: int,
                                                        blocks: int | None,
                                                        per_worker_spare: int) -> None:
    cfg = Config(workers=workers, stream_maxconn=maxconn, blocks_max=blocks,
                 connection_blocks_max=4)
    w = worker_config(cfg, workers)
    w.validate_args()  # each worker's share passes the same check
    assert budget(w).spare == per_worker_spare
    assert w.stream_maxconn == maxconn // workers
    assert per_worker_spare * workers <= budget(cfg).spare
