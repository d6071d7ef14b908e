"""Where a node writes: only under its own output folder, under names the server may not steer.

A node's output folder is ``node_config["output-dir"]`` (``--node-config "output-dir='/srv/site/out'"``
on a SuperNode), or else ``privkit-output/`` under the node process's working directory. A file name a
server sends (e.g. the student's model name) is a *bare* name: one path component of letters, digits,
``_``, ``-`` and ``.``, never ``.`` or ``..``, never starting with ``.``. Anything else is refused before
the node writes, so a compromised or misconfigured server cannot make a site write outside its folder.

The simulation runners (``simulations.pate``) give their simulated nodes the run's output folder through
:func:`with_output_dir`, since Flower's simulation engine sets no node configuration of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from flwr.app import Context, Message

from protocol.codec import BARE_NAME_RULE, is_bare_name

OUTPUT_DIR_NODE_CONFIG_KEY = "output-dir"
"""``node_config`` key naming the folder this node writes under."""
DEFAULT_OUTPUT_DIR = "privkit-output"
"""The output folder, under the node's working directory, when ``node_config`` names none."""

Handler = TypeVar("Handler", bound=Callable[[Message, Context], Message])


def check_bare_name(name: str, what: str) -> str:
    """``name`` if it is a bare file name (see the module docstring).

    Raises
    ------
    ValueError
        Naming ``what`` and the value, if ``name`` is not a string, is empty, holds a path separator or
        any other character outside ``[A-Za-z0-9_.-]``, starts with ``.``, or is longer than 128.
    """
    if not is_bare_name(name):
        raise ValueError(f"{what} must be {BARE_NAME_RULE}, got {name!r}")
    return name  # type: ignore[return-value]


def node_output_dir(context: Context) -> Path:
    """This node's output folder (created owner-only if missing), resolved to an absolute path.

    Raises
    ------
    ValueError
        If ``node_config["output-dir"]`` is set but is not a non-empty string.
    """
    configured = context.node_config.get(OUTPUT_DIR_NODE_CONFIG_KEY)
    if configured is None:
        folder = Path.cwd() / DEFAULT_OUTPUT_DIR
    elif isinstance(configured, str) and configured:
        folder = Path(configured)
    else:
        raise ValueError(f"node_config {OUTPUT_DIR_NODE_CONFIG_KEY!r} must be a non-empty path, got "
                         f"{configured!r}")
    folder = folder.resolve()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def node_file(context: Context, name: str, what: str) -> Path:
    """``<node output folder>/<name>`` for a server-sent ``name``, refused unless it is a bare name."""
    return node_output_dir(context) / check_bare_name(name, what)


def with_output_dir(handler: Handler, output_dir: str | Path) -> Handler:
    """``handler`` run with ``node_config["output-dir"] = output_dir`` unless the node sets its own."""
    folder = str(Path(output_dir).resolve())

    def run(msg: Message, context: Context) -> Message:
        if OUTPUT_DIR_NODE_CONFIG_KEY not in context.node_config:
            context.node_config = {**context.node_config, OUTPUT_DIR_NODE_CONFIG_KEY: folder}
        return handler(msg, context)

    run.__name__ = getattr(handler, "__name__", "handler")
    run.__doc__ = handler.__doc__
    return run  # type: ignore[return-value]
