"""Message handlers imported on the first message that needs them, not when the ClientApp loads.

In a deployment a SuperNode starts a new ``flwr-clientapp`` process for every message (flwr 1.42), which
imports the app module and then calls one handler. Importing every handler module up front costs each
message the imports of all of them — torch alone ≈ 2.3 s, scikit-learn and pandas ≈ 1.5 s — even for a
``describe`` or a PSI step that needs none of it. The ClientApp registers :class:`LazyHandler` objects
instead: the message type is known without importing anything heavy, and the module that handles it is
imported when a message of that type arrives (once per process; in a simulation, once per run).

A module that registers several handlers through a ``register_*(app, **options)`` function (the vertical
protocol, PSI, secure aggregation) is run against a :class:`HandlerRecorder` on its first message, so the
handlers and their options are exactly the ones the eager registration gives.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message

Handler = Callable[[Message, Context], Message]


def load(target: str) -> Any:
    """The object a ``"package.module:name"`` target names (the module is imported now)."""
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"a handler target is 'package.module:name', got {target!r}")
    return getattr(importlib.import_module(module), name)


class LazyHandler:
    """A handler that imports ``target`` (``"package.module:function"``) on its first call."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._handler: Handler | None = None

    def __call__(self, message: Message, context: Context) -> Message:
        if self._handler is None:
            self._handler = load(self.target)
        return self._handler(message, context)


class HandlerRecorder:
    """Stands in for a ``ClientApp`` while a ``register_*`` function runs: keeps what it registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def query(self, name: str) -> Callable[[Handler], Handler]:
        return self._register("query", name)

    def train(self, name: str) -> Callable[[Handler], Handler]:
        return self._register("train", name)

    def evaluate(self, name: str) -> Callable[[Handler], Handler]:
        return self._register("evaluate", name)

    def _register(self, kind: str, name: str) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            if f"{kind}.{name}" in self.handlers:  # as ClientApp refuses it
                raise ValueError(f"a handler for {kind}.{name} is already registered")
            self.handlers[f"{kind}.{name}"] = handler
            return handler

        return decorator


class LazyRegistration:
    """``register(app, **options)`` from ``target``, run on the first message of any of its types."""

    def __init__(self, target: str, **options: Any) -> None:
        self.target = target
        self.options = options
        self._handlers: dict[str, Handler] | None = None

    def handler(self, message_type: str) -> Handler:
        """The handler of ``message_type`` (``"query.psi_begin"``), resolved when a message comes."""

        def handle(message: Message, context: Context) -> Message:
            handlers = self.registered()
            if message_type not in handlers:
                raise ValueError(f"{self.target} registers no handler for {message_type!r}")
            return handlers[message_type](message, context)

        handle.__name__ = f"handle_{message_type.replace('.', '_')}"
        return handle

    def registered(self) -> dict[str, Handler]:
        """Every handler ``target`` registers (imports and runs it the first time)."""
        if self._handlers is None:
            recorder = HandlerRecorder()
            load(self.target)(recorder, **self.options)
            self._handlers = recorder.handlers
        return self._handlers
