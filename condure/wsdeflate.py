"""permessage-deflate with a bound on what one message may inflate to (D18).

Shared by server mode (client messages) and client mode (origin messages).
condure 1.9.1 inflates a compressed message however large it becomes (a
65 KB message of zeros reached the handler as 64 MiB); we close it with 1009
once its inflated size passes `--compression-message-max` (0: no limit).

Memory stays bounded either way because the compressed bytes are given to
wsproto DEFLATE_FEED bytes at a time, and no more while earlier output waits
for credits: deflate inflates at most ~1032x, so one step yields about
260 KB at worst. The bound is about what reaches the other side.
"""
from __future__ import annotations

from typing import Any

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

DEFLATE_FEED = 256


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that refuses to inflate one message past `limit` bytes.

    Only inflated output counts: an uncompressed message (RSV1 clear) on a
    connection that negotiated deflate is not limited, just as on one that
    did not, and neither are control frames.

    Control frames also leave wsproto's per-message state alone: its
    PerMessageDeflate treats a ping between two fragments of a compressed
    message as the end of that message, and the fragments after it came out
    still compressed (wsproto 1.2). They are never compressed themselves
    (RFC 7692 6.1), so here they only get the RSV1 check.
    """

    def __init__(self, limit: int, **flags: Any) -> None:
        super().__init__(**flags)
        self.limit = limit
        self._inflated = 0
        self._control = False  # the frame being read is a control frame

    def frame_inbound_header(self, proto: Any, opcode: Opcode, rsv: RsvBits,
                             payload_length: int) -> CloseReason | RsvBits:
        self._control = opcode.iscontrol()
        if not self._control:
            return super().frame_inbound_header(proto, opcode, rsv, payload_length)
        return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)

    def _inflating(self) -> bool:
        # wsproto's state for the frame being read: its message is compressed
        # and the frame is a data frame
        return bool(self._inbound_compressed) and bool(self._inbound_is_compressible)

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> Any:
        if self._control:
            return data
        out = super().frame_inbound_payload_data(proto, data)
        return self._count(out) if self._inflating() else out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> Any:
        if self._control:
            return None
        inflating = self._inflating()  # before wsproto resets it at the message's end
        out = super().frame_inbound_complete(proto, fin)
        if not inflating:
            return out
        out = self._count(out)
        if fin:
            self._inflated = 0
        return out

    def _count(self, out: Any) -> Any:
        if isinstance(out, (bytes, bytearray)):
            self._inflated += len(out)
            if self.limit and self._inflated > self.limit:
                return CloseReason.MESSAGE_TOO_BIG
        return out
