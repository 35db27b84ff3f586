"""WebSocket frames from a client, parsed on the server side (RFC 6455 5): sans-I/O.

:class:`FrameReader` takes bytes as the socket delivers them and gives back complete messages
and control frames. It checks everything RFC 6455 asks of a server: client frames are masked,
no reserved bit is set (no extension is negotiated), the opcode is known, control frames are
final and at most 125 bytes, continuations belong to a fragmented message and no new message
starts inside one, a 64-bit length has its top bit clear, a message (all its fragments
together) is within ``max_size`` and ``max_fragments``, text is UTF-8 (a fragmented message is
checked fragment by fragment, so bad input fails as soon as it is seen) and a close frame
carries nothing, or a valid code and a UTF-8 reason. A violation stops the reader with
:attr:`FrameReader.error` set to the close code and reason to fail the connection with.

An idle reader holds no buffer: a ``bytearray`` exists only while a frame is incomplete, and a
list of fragments only while a fragmented message is. The few frames a server sends besides
its messages (pong, ping, close) are built by :func:`control_frame`.
"""

from __future__ import annotations

import codecs

from websockets.speedups import apply_mask

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009

# Close codes a peer may send (RFC 6455 7.4.1, and the IANA registry up to 1014); 3000-4999
# are registered or private and valid too.
_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

_utf8_decoder = codecs.getincrementaldecoder("utf-8")

Event = tuple[int, bytes]
"""``(opcode, payload)``: a complete message (``TEXT``, ``BINARY``) or a control frame."""


class FrameError(Exception):
    """The client broke the protocol: the connection fails with ``code``.

    Attributes:
        code: the close code to send (1002, 1007 or 1009).
        reason: what was wrong, for the close frame and the log.
        limit: the setting a message went over (``max_message_size``, ``max_fragments``), or
            ``""`` for a protocol violation.
    """

    def __init__(self, code: int, reason: str, limit: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.limit = limit


class FrameReader:
    """One connection's incoming frames.

    Args:
        max_size: the largest message accepted, in bytes, all fragments together (1009).
        max_fragments: the most frames one message may come in (1009): empty fragments pass
            the size limit, so their number is capped too.
    """

    __slots__ = (
        "_buffer",
        "_decoder",
        "_need",
        "_opcode",
        "_parts",
        "_size",
        "done",
        "error",
        "max_fragments",
        "max_size",
    )

    def __init__(self, max_size: int, max_fragments: int) -> None:
        self.max_size = max_size
        self.max_fragments = max_fragments
        # Bytes of a frame not complete yet, and how many it takes before parsing again.
        self._buffer: bytearray | None = None
        self._need = 0
        # The fragmented message under way: its opcode, fragments, size, and for text the
        # decoder that checks it as it comes.
        self._opcode = CONT
        self._parts: list[bytes] | None = None
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self.done = False
        """Nothing more is parsed: a close frame was received, or the reader failed or was
        stopped."""
        self.error: FrameError | None = None
        """Why the reader failed; the caller takes it (sets it back to None) to act on it."""

    def stop(self) -> None:
        """Parse nothing more (the connection is failing or closed): drop what is pending."""
        self.done = True
        self._buffer = None
        self._parts = None
        self._decoder = None

    def feed(self, data: bytes, events: list[Event]) -> int:
        """Parse ``data``, the next bytes from the socket, appending to ``events`` each
        complete message and control frame in the order received.

        After a close frame (its event is the last) or a violation (:attr:`error` is set,
        after the events of the frames before it) the reader is :attr:`done` and ignores
        whatever comes next.

        Returns:
            How many frames were parsed (fragments and control frames count one each).
        """
        if self.done:
            return 0
        buffer = self._buffer
        if buffer is not None:
            buffer += data
            if len(buffer) < self._need:
                return 0
            data = bytes(buffer)
            self._buffer = None
        size = len(data)
        pos = frames = 0
        max_size = self.max_size
        while True:
            left = size - pos
            if left < 2:
                break
            head = data[pos]
            length = data[pos + 1]
            if not length & 0x80:
                return self._fail(frames, PROTOCOL_ERROR, "incorrect masking")
            length &= 0x7F
            start = pos + 6
            if length >= 126:
                if length == 126:
                    if left < 4:
                        break
                    length = (data[pos + 2] << 8) | data[pos + 3]
                    start = pos + 8
                else:
                    if left < 10:
                        break
                    length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                    if length >> 63:
                        return self._fail(frames, PROTOCOL_ERROR, "invalid frame length")
                    start = pos + 14
            if (head != 0x81 and head != 0x82) or length > max_size or self._parts is not None:
                # Anything but a whole text or binary message within the limit is checked.
                problem = self._check(head, length)
                if problem is not None:
                    return self._fail(frames, *problem)
            end = start + length
            if end > size:
                self._wait(data, pos, end - pos)
                return frames
            payload = apply_mask(data[start:end], data[start - 4 : start])
            pos = end
            frames += 1
            opcode = head & 0x0F
            fin = head & 0x80
            if opcode >= CLOSE:
                if opcode == CLOSE:
                    problem = _check_close(payload)
                    if problem is not None:
                        return self._fail(frames, *problem)
                    events.append((CLOSE, payload))
                    self.stop()
                    return frames
                events.append((opcode, payload))
            elif opcode == CONT or not fin:
                message = self._fragment(opcode, payload, fin)
                if message is not None:
                    events.append(message)
                elif self.error is not None:
                    return frames
            else:
                if opcode == TEXT:
                    try:
                        payload.decode()
                    except UnicodeDecodeError:
                        return self._fail(frames, INVALID_DATA, "invalid UTF-8 in a text message")
                events.append((opcode, payload))
        if pos < size:
            self._wait(data, pos, 0)
        return frames

    def _check(self, head: int, length: int) -> tuple[int, str, str] | None:
        """What is wrong with a frame with header byte ``head`` and ``length`` bytes of
        payload, given the message under way (None: nothing). Changes nothing: a frame's
        header is checked again while its payload is incomplete."""
        if head & 0x70:
            return PROTOCOL_ERROR, "reserved bits must be 0", ""
        opcode = head & 0x0F
        if opcode >= CLOSE:
            if opcode > PONG:
                return PROTOCOL_ERROR, "invalid opcode", ""
            if not head & 0x80:
                return PROTOCOL_ERROR, "fragmented control frame", ""
            if length > 125:
                return PROTOCOL_ERROR, "control frame too long", ""
            return None
        if opcode == CONT:
            if self._parts is None:
                return PROTOCOL_ERROR, "unexpected continuation frame", ""
            if len(self._parts) >= self.max_fragments:
                return MESSAGE_TOO_BIG, "message in too many fragments", "max_fragments"
            if self._size + length > self.max_size:
                return MESSAGE_TOO_BIG, "message too big", "max_message_size"
            return None
        if opcode > BINARY:
            return PROTOCOL_ERROR, "invalid opcode", ""
        if self._parts is not None:
            return PROTOCOL_ERROR, "expected a continuation frame", ""
        if length > self.max_size:
            return MESSAGE_TOO_BIG, "message too big", "max_message_size"
        return None

    def _fragment(self, opcode: int, payload: bytes, fin: int) -> Event | None:
        """Take one frame of a fragmented message (a first one, or a continuation); the
        whole message once ``fin``. Invalid UTF-8 sets :attr:`error`."""
        if opcode != CONT:
            self._opcode = opcode
            self._parts = []
            self._size = 0
            if opcode == TEXT:
                self._decoder = _utf8_decoder()
        parts = self._parts
        assert parts is not None
        parts.append(payload)
        self._size += len(payload)
        decoder = self._decoder
        if decoder is not None:
            try:
                decoder.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                self._fail(0, INVALID_DATA, "invalid UTF-8 in a text message")
                return None
        if not fin:
            return None
        message = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = None
        self._decoder = None
        return self._opcode, message

    def _wait(self, data: bytes, pos: int, need: int) -> None:
        """Keep ``data[pos:]``, an incomplete frame, until ``need`` bytes of it are there (0:
        its header is incomplete, so any more bytes)."""
        self._buffer = bytearray(data[pos:]) if pos else bytearray(data)
        self._need = need or len(self._buffer) + 1

    def _fail(self, frames: int, code: int, reason: str, limit: str = "") -> int:
        self.error = FrameError(code, reason, limit)
        self.stop()
        return frames


def _check_close(payload: bytes) -> tuple[int, str, str] | None:
    """What is wrong with a close frame's payload (None: nothing): empty, or a valid code and
    a UTF-8 reason."""
    if not payload:
        return None
    if len(payload) < 2:
        return PROTOCOL_ERROR, "close frame too short", ""
    code = (payload[0] << 8) | payload[1]
    if code not in _CLOSE_CODES and not 3000 <= code < 5000:
        return PROTOCOL_ERROR, "invalid close code", ""
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return INVALID_DATA, "invalid UTF-8 in the close reason", ""
    return None


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked server control frame (``payload`` at most 125 bytes)."""
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A server close frame with ``code`` and ``reason`` (cut to fit in 125 bytes)."""
    data = reason.encode()
    if len(data) > 123:
        data = data[:123].decode(errors="ignore").encode()
    return control_frame(CLOSE, code.to_bytes(2, "big") + data)
