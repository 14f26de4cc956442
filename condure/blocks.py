"""The spare buffer blocks a request or response head may borrow to grow.

Pure. pushpin-connmgr's model (connmgr.md 3.2): a block is `--buffer-size`
bytes; every stream connection owns two (its read and write buffers),
reserved by `--stream-maxconn`; `--blocks-max` minus those is a pool of
spare blocks that the heads of all connections share, and one connection
holds at most `--connection-blocks-max` - 2 of them at once. With the
defaults (blocks-max = 2 x stream-maxconn, connection-blocks-max = 2) the
pool and the allowance are both 0: a head is limited to `--buffer-size`, as
in condure.

A head is read into a buffer whose capacity its holder keeps (the parser's
`max_head`, the client's `Origin.capacity`); the budget never sees the
holder, only capacities: `grow` returns a capacity one block larger (a block
taken from the pool) or the same one (none to be had), and `release` gives
back every block a capacity holds beyond the base and returns the base.
So what a holder owes is always its capacity, and giving back twice gives
back nothing the second time.
"""
from __future__ import annotations


class BlockBudget:
    """One pool of spare blocks: the server side of a worker, or its client side."""

    __slots__ = ("block_size", "spare", "free", "max_capacity")

    def __init__(self, block_size: int, spare: int, per_connection: int) -> None:
        """`spare`: blocks in the pool; `per_connection`: how many one head may hold."""
        if block_size < 1 or spare < 0 or per_connection < 0:
            raise ValueError("block size must be positive, block counts not negative")
        self.block_size = block_size
        self.spare = spare
        self.free = spare  # blocks in the pool now
        # the largest a head's buffer can become: the base block and its allowance
        self.max_capacity = block_size * (1 + per_connection)

    @classmethod
    def for_config(cls, buffer_size: int, stream_maxconn: int, blocks_max: int | None,
                   connection_blocks_max: int) -> BlockBudget:
        """The pool the options describe (`blocks_max` None: its default, 2 x stream-maxconn)."""
        base = 2 * stream_maxconn
        total = base if blocks_max is None else blocks_max
        return cls(buffer_size, max(total - base, 0), max(connection_blocks_max - 2, 0))

    def grow(self, capacity: int) -> int:
        """`capacity` plus one block if the pool has one and the head may hold
        one more; otherwise `capacity` unchanged (the head cannot grow)."""
        if self.free and capacity < self.max_capacity:
            self.free -= 1
            return capacity + self.block_size
        return capacity

    def release(self, capacity: int) -> int:
        """Give back the blocks `capacity` holds beyond the base; the base capacity."""
        held = (capacity - self.block_size) // self.block_size
        if held > 0:
            self.free = min(self.free + held, self.spare)
        return self.block_size

    @property
    def borrowed(self) -> int:
        """Blocks held by heads now."""
        return self.spare - self.free
