"""Client frames parsed on the server side: the native transport's reader next to the sans-I/O
protocol of ``websockets``, in one process, side by side.

For each kind of input, the microseconds per frame to turn socket bytes into complete
messages (checks included: masking, limits, UTF-8 for text), and the bytes one idle parser
holds per connection. ``websockets`` is driven the way a server drives it: ``receive_data``,
``events_received``, the payload of each data frame taken as ``bytes`` and text checked as
UTF-8 (its sans-I/O layer leaves that to the caller).

Run: ``python benchmarks/frame_parsing.py [--seconds 0.3]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from collections.abc import Callable

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from hubbub.transports.frames import BINARY, CONT, PING, TEXT, Event, FrameReader

MAX_SIZE = 65536
MAX_FRAGMENTS = 1000
PUBLISH = b'{"id":7,"publish":{"channel":"room:42","data":{"text":"hello everyone in the room"}}}'


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame, masked."""
    size = len(payload)
    first = bytes(((0x80 if fin else 0) | opcode,))
    short = size < 126
    length = bytes((0x80 | size,)) if short else bytes((0xFE,)) + size.to_bytes(2, "big")
    key = os.urandom(4)
    return first + length + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


INPUTS = {
    "publish command (one text frame)": (masked(TEXT, PUBLISH), 1),
    "16 publish commands in one read": (masked(TEXT, PUBLISH) * 16, 16),
    "4 KiB binary frame": (masked(BINARY, os.urandom(4096)), 1),
    "empty ping": (masked(PING, b""), 1),
    "text in 8 fragments": (
        masked(TEXT, PUBLISH[:10], fin=False)
        + b"".join(masked(CONT, PUBLISH[10 + 8 * i : 18 + 8 * i], fin=False) for i in range(6))
        + masked(CONT, PUBLISH[58:]),
        8,
    ),
}


def websockets_protocol() -> Protocol:
    return Protocol(Side.SERVER, state=State.OPEN, max_size=MAX_SIZE)


def with_websockets(data: bytes) -> Callable[[], None]:
    ws = websockets_protocol()
    text = Opcode.TEXT

    def run() -> None:
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame) and event.opcode.value < 8:
                payload = bytes(event.data)
                if event.opcode is text:
                    payload.decode()
        ws.data_to_send()  # the pongs

    return run


def with_reader(data: bytes) -> Callable[[], None]:
    reader = FrameReader(MAX_SIZE, MAX_FRAGMENTS)

    def run() -> None:
        events: list[Event] = []
        reader.feed(data, events)

    return run


def per_frame(run: Callable[[], None], frames: int, seconds: float) -> float:
    """Microseconds per frame, the best of three runs of about ``seconds / 3`` each."""
    best = float("inf")
    for _ in range(3):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(200):
                run()
            count += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = min(best, (now - start) / (count * frames) * 1e6)
    return best


def bytes_per_parser(make: Callable[[], object], count: int = 2000) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [make() for _ in range(count)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    args = parser.parse_args()
    print(f"{'input':<36} {'websockets µs/frame':>20} {'FrameReader µs/frame':>21} {'ratio':>7}")
    for name, (data, frames) in INPUTS.items():
        old = per_frame(with_websockets(data), frames, args.seconds)
        new = per_frame(with_reader(data), frames, args.seconds)
        print(f"{name:<36} {old:>20.2f} {new:>21.2f} {new / old:>7.2f}")
    old_size = bytes_per_parser(websockets_protocol)
    new_size = bytes_per_parser(lambda: FrameReader(MAX_SIZE, MAX_FRAGMENTS))
    ratio = new_size / old_size
    print(f"{'bytes per idle parser':<36} {old_size:>20.0f} {new_size:>21.0f} {ratio:>7.2f}")
    print(f"(load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
