"""The transmitter's link table: the default link always open, idle links closed for new ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.pb import frame_pb2
from services.transmitter.engine import LinkError

from ._support import Stack, raw_request, run, running_stack


async def send(stack: Stack, link_id: str, image_id: str) -> frame_pb2.FrameResult:
    engine = stack.tx.engine
    await engine.acquire(link_id)
    return await engine.process(link_id, image_id, raw_request(image_id).image)


def open_links(stack: Stack) -> set[str]:
    engine = stack.tx.engine
    return {k for k in ("default", "a", "b", "c") if engine.link(k) is not None}


class TestLinkTable:
    def test_a_new_link_closes_the_least_recently_used_idle_one(self, tx_weights: Path) -> None:
        async def scenario() -> tuple[set[str], float | None, float | None, list[int]]:
            async with running_stack(tx_weights, max_links=2) as stack:
                await send(stack, "default", "d0")
                await send(stack, "a", "a0")
                await send(stack, "b", "b0")
                await send(stack, "a", "a1")  # now b is the least recently used
                c = await send(stack, "c", "c0")
                a = await send(stack, "a", "a2")  # a stayed open: its numbering goes on
                closed = stack.sample("rkdsc_transmitter_links_closed_total")
                gauge = stack.sample("rkdsc_transmitter_snr_estimate_db", {"link": "b"})
                return open_links(stack), closed, gauge, [c.sequence, a.sequence]

        links, closed, gauge, sequences = run(scenario())
        assert links == {"default", "a", "c"}
        assert closed == 1.0
        assert gauge is None  # a closed link's series goes with it
        assert sequences == [0, 2]

    def test_a_reopened_link_goes_on_with_its_numbering(self, tx_weights: Path) -> None:
        async def scenario() -> list[int]:
            async with running_stack(tx_weights, max_links=1) as stack:
                first = await send(stack, "a", "a0")
                await send(stack, "b", "b0")  # closes a
                again = await send(stack, "a", "a1")  # closes b, opens a anew
                b_again = await send(stack, "b", "b1")
                return [first.sequence, again.sequence, b_again.sequence]

        # New sequence numbers: the emulator seeds noise by link and sequence, none repeats.
        assert run(scenario()) == [0, 1, 1]

    def test_links_in_use_are_never_closed(self, tx_weights: Path) -> None:
        async def scenario() -> tuple[str, str, set[str]]:
            async with running_stack(tx_weights, max_links=2) as stack:
                engine = stack.tx.engine
                engine.hold("a")  # a run streaming on a, between two of its frames
                await engine.acquire("b")  # a frame of b in flight
                with pytest.raises(LinkError) as refused:
                    engine.check_link("c")
                with pytest.raises(LinkError) as refused_hold:
                    engine.hold("c")
                engine.release_hold("a")
                engine.hold("c")  # a is idle now: closed to make room
                return refused.value.code, str(refused_hold.value), open_links(stack)

        code, message, links = run(scenario())
        assert code == "RESOURCE_EXHAUSTED"
        assert "in use" in message and "RKDSC_TRANSMITTER_MAX_LINKS=2" in message
        assert links == {"b", "c"}

    def test_a_link_waiting_for_a_slot_is_in_use(self, tx_weights: Path) -> None:
        async def scenario() -> str:
            async with running_stack(tx_weights, max_links=1, max_in_flight=1) as stack:
                engine = stack.tx.engine
                await engine.acquire("a")
                waiter = asyncio.create_task(engine.acquire("a"))  # waits for a's one slot
                await asyncio.sleep(0.05)
                with pytest.raises(LinkError) as refused:
                    engine.check_link("b")
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)
                await engine.process("a", "a0", raw_request("a0").image)
                engine.check_link("b")  # the cancelled wait left nothing behind: a is idle
                return refused.value.code

        assert run(scenario()) == "RESOURCE_EXHAUSTED"
