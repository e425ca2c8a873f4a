"""A provider's messages sent by a bounded pool of threads (a call waits on the network, not the
CPU), paced by dunning.pacing: at most `email.rate_per_second`, a pause when the provider
answers 429, and the channel stopped for the run after `email.max_consecutive_failures`
transport failures in a row. Claiming and recording stay in the dispatcher's thread: a claimed
chunk's outcomes are recorded once all its messages are settled, chunk after chunk."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from dunning.channels.message import Message
from dunning.channels.protocol import Channel, Claimed
from dunning.dispatch_pool import Attempt, attempt
from dunning.pacing import Breaker, Gate

# A 429 is waited out this many times for one message, each pause at most MAX_PAUSE seconds;
# then the message fails, retryable (a later day).
RATE_LIMIT_TRIES = 5
MAX_PAUSE = 60.0

Read = Callable[[list[int]], dict[int, tuple[Claimed, Message | None]]]


def send(claims: Iterable[list[int]], read: Read, channel: Channel,
         record: Callable[[list[Attempt]], None], concurrency: int, gate: Gate,
         breaker: Breaker) -> None:
    """Deliver every claimed chunk, at most `concurrency` messages at once. Once the breaker is
    open, no chunk is claimed any more, and messages not yet started are released (queued
    again, for the next run)."""
    executor = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="dunning-send")
    chunks: deque[list[Future[Attempt] | Attempt]] = deque()
    outstanding: set[Future[Attempt]] = set()

    def settled() -> None:  # record the oldest chunks whose messages are all settled
        while chunks and all(not isinstance(item, Future) or item.done()
                             for item in chunks[0]):
            record([item.result() if isinstance(item, Future) else item
                    for item in chunks.popleft()])

    try:
        for claimed in claims:
            chunk: list[Future[Attempt] | Attempt] = []
            for action_id, (action, message) in sorted(read(claimed).items()):
                if message is None:
                    chunk.append(Attempt(action_id, action.dedupe_key, cancelled=True))
                elif breaker.open:
                    chunk.append(Attempt(action_id, message.customer_ref, released=True))
                else:
                    future = executor.submit(_paced, channel, gate, breaker, action_id, action,
                                             message)
                    chunk.append(future)
                    outstanding.add(future)
            chunks.append(chunk)
            settled()
            while len(outstanding) >= concurrency:
                done, _ = wait(outstanding, return_when=FIRST_COMPLETED)
                outstanding.difference_update(done)
                settled()
            if breaker.open:
                break  # the claims not taken stay queued
        while outstanding:
            done, _ = wait(outstanding, return_when=FIRST_COMPLETED)
            outstanding.difference_update(done)
            settled()
        settled()
    finally:
        executor.shutdown(wait=True)


def _paced(channel: Channel, gate: Gate, breaker: Breaker, action_id: int, action: Claimed,
           message: Message) -> Attempt:
    done = Attempt(action_id, message.customer_ref, released=True)
    for _ in range(RATE_LIMIT_TRIES):
        if breaker.open:  # stopped while this one waited for a thread
            return Attempt(action_id, message.customer_ref, released=True)
        gate.wait()
        done = attempt(channel, action_id, action, message)
        if done.retry_after is None:
            breaker.record(done.delivered is not None, transport_failure(done), done.error)
            return done
        gate.pause(min(max(done.retry_after, 0.0), MAX_PAUSE))
    return done


def transport_failure(done: Attempt) -> bool:
    """A failure of the way, not of the message: a timeout, a refused connection, a 5xx, an
    unknown outcome (a refused address or a missing template is the message's own)."""
    return done.delivered is None and not done.cancelled and not done.internal and (
        done.unknown or done.retryable)
