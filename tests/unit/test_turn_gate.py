"""The handshake gate: at most ``per_turn`` callers per loop iteration, the others in order in
the next iterations, on a real event loop."""

from __future__ import annotations

import asyncio

from hubbub.transports.turn_gate import TurnGate, gate_for


async def _turn() -> None:
    """Let the loop run one iteration (the gate's count starts again in it)."""
    await asyncio.sleep(0)


async def test_per_turn_callers_go_at_once_the_others_in_order_later() -> None:
    gate = TurnGate(asyncio.get_running_loop(), per_turn=2)
    went: list[int] = []
    for n in range(7):
        if gate.enter():
            went.append(n)
        else:
            gate.wait(lambda n=n: went.append(n))  # type: ignore[misc]
    assert went == [0, 1] and gate.waiting == 5
    await _turn()
    assert went == [0, 1, 2, 3]
    # A newcomer waits behind those already waiting, even with room in its own turn.
    assert not gate.enter()
    gate.wait(lambda: went.append(99))
    for _ in range(3):
        await _turn()
    assert went == [0, 1, 2, 3, 4, 5, 6, 99] and gate.waiting == 0
    await _turn()
    await _turn()
    assert gate.enter() and gate.enter() and not gate.enter()


async def test_zero_lets_everyone_through_even_those_waiting() -> None:
    gate = TurnGate(asyncio.get_running_loop(), per_turn=1)
    went: list[int] = []
    assert gate.enter()
    for n in range(3):
        assert not gate.enter()
        gate.wait(lambda n=n: went.append(n))  # type: ignore[misc]
    gate.per_turn = 0
    assert gate.enter()
    await _turn()
    assert went == [0, 1, 2]


async def test_a_caller_that_raises_does_not_hold_the_others() -> None:
    gate = TurnGate(asyncio.get_running_loop(), per_turn=1)
    went: list[str] = []
    errors: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))

    def broken() -> None:
        raise RuntimeError("a bug in one handshake")

    assert gate.enter()
    gate.wait(broken)
    gate.wait(lambda: went.append("next"))
    for _ in range(3):
        await _turn()
    assert went == ["next"] and len(errors) == 1


async def test_one_gate_per_loop() -> None:
    assert gate_for(8) is gate_for(16)
    assert gate_for(4).per_turn == 4
