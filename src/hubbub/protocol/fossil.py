"""Fossil deltas: a target described as copies from a source plus literal bytes.

The format (PROTOCOL-EXTENSIONS.md §4.5) is what centrifuge-js decodes for subscriptions that
negotiated ``delta: "fossil"``. A delta is text-like: the target's length, then commands,
then a checksum of the target::

    <size>\\n  <cnt>@<offset>,  <cnt>:<cnt raw bytes>  ...  <checksum>;

Integers are written in base 64, most significant digit first, with the alphabet
:data:`ALPHABET`. :func:`create` makes a delta, :func:`apply` rebuilds the target and raises
:class:`DeltaError` on anything malformed. Both are pure functions of bytes.

The encoder looks for runs the target shares with the source by indexing the source in
16-byte blocks and sliding a 16-byte window over the target; a window equal to a source block
is grown in both directions and becomes a copy when that is shorter than the bytes it stands
for. The index is keyed by the blocks' bytes (a dictionary lookup per window, no rolling hash
in Python), and matches are grown by comparing slices, so the per-byte work stays in C.
"""

from __future__ import annotations

import array
import sys

__all__ = ["ALPHABET", "DeltaError", "apply", "checksum", "create", "encode_int"]

ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
"""The 64 digits of a delta's integers, by value."""

_VALUE = [-1] * 256
for _value, _byte in enumerate(ALPHABET):
    _VALUE[_byte] = _value

_BLOCK = 16
"""Length of the source blocks indexed, and of the window slid over the target."""

_MAX_CANDIDATES = 250
"""Source blocks tried per window position: bounds the work on very repetitive sources."""

_MAX_INT = 2**63
"""No real delta has a larger integer; a longer digit run is a malformed (or hostile) one."""

_NEWLINE, _COPY, _COMMA, _INSERT, _END = b"\n@,:;"


class DeltaError(ValueError):
    """A delta that is malformed or does not fit its source; the message says what."""


def encode_int(value: int) -> bytes:
    """``value`` (>= 0) in the delta's base-64 digits, most significant first (``0`` for 0)."""
    if value < 64:
        return ALPHABET[value : value + 1]
    digits = bytearray()
    while value:
        digits.append(ALPHABET[value & 63])
        value >>= 6
    digits.reverse()
    return bytes(digits)


def _width(value: int) -> int:
    """How many digits :func:`encode_int` writes for ``value``."""
    width = 1
    while value >= 64:
        value >>= 6
        width += 1
    return width


_WORDS = "I" if array.array("I").itemsize == 4 else "L"


def checksum(data: bytes | bytearray) -> int:
    """The delta trailer's checksum of ``data``: its big-endian 32-bit words summed modulo
    2**32, a 1-3 byte tail counting as the high bytes of one more word."""
    tail = len(data) % 4
    if tail:
        data = bytes(data) + bytes(4 - tail)
    words = array.array(_WORDS, data)
    if sys.byteorder == "little":
        words.byteswap()
    return sum(words) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Encoding


def _forward(a: bytes, i: int, b: bytes, j: int) -> int:
    """Length of the common prefix of ``a[i:]`` and ``b[j:]``, by slices of growing size."""
    n = min(len(a) - i, len(b) - j)
    done = 0
    step = 32
    while done < n:
        size = min(step, n - done)
        if a[i + done : i + done + size] == b[j + done : j + done + size]:
            done += size
            step <<= 1
            continue
        lo, hi = done, done + size  # equal up to lo; the first difference is before hi
        while hi - lo > 8:
            mid = (lo + hi) >> 1
            if a[i + lo : i + mid] == b[j + lo : j + mid]:
                lo = mid
            else:
                hi = mid
        while a[i + lo] == b[j + lo]:
            lo += 1
        return lo
    return done


def _backward(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    """Length (at most ``limit``) of the common suffix of ``a[:i]`` and ``b[:j]``."""
    done = 0
    step = 16
    while done < limit:
        size = min(step, limit - done)
        if a[i - done - size : i - done] == b[j - done - size : j - done]:
            done += size
            step <<= 1
            continue
        while a[i - done - 1] == b[j - done - 1]:
            done += 1
        return done
    return done


def create(source: bytes, target: bytes) -> bytes:
    """A delta that rebuilds ``target`` from ``source`` (see :func:`apply`).

    A source of 16 bytes or less gives one literal insert of the whole target.
    """
    out = [encode_int(len(target)), b"\n"]
    n_src, n_tgt = len(source), len(target)
    if n_src <= _BLOCK:
        out += (encode_int(n_tgt), b":", target)
    else:
        index: dict[bytes, list[int]] = {}
        for offset in range(0, n_src - _BLOCK + 1, _BLOCK):
            index.setdefault(source[offset : offset + _BLOCK], []).append(offset)
        get = index.get
        base = 0  # the target up to here is described already
        pos = 0  # start of the window
        last = n_tgt - _BLOCK
        while pos <= last:
            offsets = get(target[pos : pos + _BLOCK])
            if offsets is None:
                pos += 1
                continue
            best = best_start = best_src = 0
            for src in offsets[:_MAX_CANDIDATES]:
                ahead = _BLOCK + _forward(source, src + _BLOCK, target, pos + _BLOCK)
                back = _backward(source, src, target, pos, min(src, pos - base))
                count = ahead + back
                if count <= best:
                    continue
                literal = pos - back - base
                cost = _width(literal) + _width(count) + _width(src - back) + 3
                if count >= cost:
                    best, best_start, best_src = count, pos - back, src - back
            if not best:
                pos += 1
                continue
            if best_start > base:
                out += (encode_int(best_start - base), b":", target[base:best_start])
            out += (encode_int(best), b"@", encode_int(best_src), b",")
            base = pos = best_start + best
        if base < n_tgt:
            out += (encode_int(n_tgt - base), b":", target[base:])
    out += (encode_int(checksum(target)), b";")
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# Decoding


def _read_int(delta: bytes, pos: int) -> tuple[int, int]:
    """The integer at ``pos`` (its digits end at the first non-digit) and the position after."""
    value = 0
    n = len(delta)
    while pos < n:
        digit = _VALUE[delta[pos]]
        if digit < 0:
            break
        value = (value << 6) | digit
        if value >= _MAX_INT:
            raise DeltaError("integer too large")
        pos += 1
    return value, pos


def apply(source: bytes, delta: bytes) -> bytes:
    """Rebuild the target ``delta`` describes against ``source``.

    Raises:
        DeltaError: the header is not terminated, a copy runs past the end of the source,
            the output would outgrow the size the header announces, an insert runs past the
            end of the delta, an operator is unknown, the final size or checksum does not
            match, or the terminating ``;`` never comes.
    """
    size, pos = _read_int(delta, 0)
    n = len(delta)
    if pos >= n or delta[pos] != _NEWLINE:
        raise DeltaError("size integer not terminated by a newline")
    pos += 1
    out = bytearray()
    while pos < n:
        count, pos = _read_int(delta, pos)
        if pos >= n:
            break
        op = delta[pos]
        pos += 1
        if op == _COPY:
            offset, pos = _read_int(delta, pos)
            if pos >= n or delta[pos] != _COMMA:
                raise DeltaError("copy command not terminated by ','")
            pos += 1
            if len(out) + count > size:
                raise DeltaError("copy exceeds the output size")
            if offset + count > len(source):
                raise DeltaError("copy extends past the end of the source")
            out += source[offset : offset + count]
        elif op == _INSERT:
            if len(out) + count > size:
                raise DeltaError("insert exceeds the output size")
            if pos + count > n:
                raise DeltaError("insert count exceeds the size of the delta")
            out += delta[pos : pos + count]
            pos += count
        elif op == _END:
            if len(out) != size:
                raise DeltaError("output size does not match the size in the header")
            if count != checksum(out):
                raise DeltaError("bad checksum")
            return bytes(out)
        else:
            raise DeltaError(f"unknown delta operator {bytes([op])!r}")
    raise DeltaError("unterminated delta")
