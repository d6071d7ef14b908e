"""What a ServerApp does with its ``Grid`` before a protocol starts (server side only)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

NODE_WAIT_TIMEOUT_S = 120.0
REPLY_POLL_S = 0.1
"""Seconds between two pulls for replies: Flower's own ``send_and_receive`` waits 3 s in a deployment."""


def send_and_receive(grid: Grid, messages: Iterable[Message], *, timeout: float,
                     poll_s: float = REPLY_POLL_S) -> list[Message]:
    """Push ``messages`` at once and pull their replies every ``poll_s`` seconds until all came or
    ``timeout`` seconds passed; the replies that came, in arrival order.

    The same contract as ``Grid.send_and_receive`` (a node that does not answer in time is simply
    missing from the result), but the deployment grid's version sleeps 3 s between pulls, so a reply
    that is ready after 0.2 s is seen only after 3 s; here after at most ``poll_s``. A grid without
    ``push_messages`` (an in-process test double) keeps its own ``send_and_receive``.
    """
    if poll_s <= 0:
        raise ValueError(f"poll_s must be > 0, got {poll_s!r}")
    if not hasattr(grid, "push_messages"):
        return list(grid.send_and_receive(messages, timeout=timeout))
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        pending.difference_update(m.metadata.reply_to_message_id for m in pulled)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    return replies


def wait_for_nodes(grid: Grid, num_nodes: int, timeout: float = NODE_WAIT_TIMEOUT_S) -> list[int]:
    """Block until ``num_nodes`` nodes are connected; return their IDs in a stable (sorted) order.

    Raises
    ------
    TimeoutError
        If fewer than ``num_nodes`` nodes registered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= num_nodes:
            return node_ids
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(node_ids)} of {num_nodes} nodes connected within {timeout:.0f} s"
            )
        time.sleep(0.2)


_WRAPPED = re.compile(r"<class '[^']*'>:<'(.*)'>", re.DOTALL)


def node_error(reason: str) -> str:
    """The node's own message in the ``reason`` of a Flower error reply, on one line.

    A ClientApp's exception reaches the server as ``"<class 'ValueError'>:<'message'>"`` in a deployment
    and, in the simulation engine, wrapped in a Ray task error holding the node's whole traceback and
    ending ``Exception ClientAppException occurred. Message: message'>``; either gives the first line of
    ``message``. Any other reason is returned as it is.
    """
    text = reason.strip()
    marker = "Message: "
    if marker in text:
        lines = text[text.rindex(marker) + len(marker):].splitlines()
        line = lines[0].strip() if lines else ""
        line = line[:-2] if line.endswith("'>") else line
    elif match := _WRAPPED.fullmatch(text):
        lines = match.group(1).strip().splitlines()
        line = lines[0].strip() if lines else ""
    else:
        return text
    return line or text
