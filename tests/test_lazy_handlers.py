"""The ClientApp registers every message type without importing the handlers' heavy modules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clients.lazy_handlers import HandlerRecorder, LazyRegistration, load
from clients.pate.secagg import register_secagg_handlers
from clients.vertical.handlers import register_vertical_handlers
from simulations.app import build_client_app


def registered_types(app) -> set[str]:
    return set(app._registered_funcs)  # noqa: SLF001 - Flower keeps its registrations here


def test_the_lazy_app_serves_exactly_the_message_types_the_eager_registrations_give():
    eager = HandlerRecorder()
    for name in ("describe", "prepare", "votes", "queries"):
        eager.query(name)(print)
    for name in ("teachers", "student"):
        eager.train(name)(print)
    register_secagg_handlers(eager)
    register_vertical_handlers(eager)
    assert registered_types(build_client_app()) == set(eager.handlers)


def test_loading_the_client_app_imports_no_torch_pandas_sklearn_scipy_or_phe():
    # what every deployment message pays before its handler runs (a new process per message)
    code = ("import sys, simulations.app; print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'scipy', "
            "'phe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_targets_and_unknown_types_are_named():
    with pytest.raises(ValueError, match="a handler target is 'package.module:name', got 'clients.pate.node'"):
        load("clients.pate.node")
    registration = LazyRegistration("clients.pate.secagg:register_secagg_handlers")
    with pytest.raises(ValueError, match="registers no handler for 'query.nope'"):
        registration.handler("query.nope")(None, None)
    recorder = HandlerRecorder()
    recorder.query("x")(print)
    with pytest.raises(ValueError, match="a handler for query.x is already registered"):
        recorder.query("x")(print)
