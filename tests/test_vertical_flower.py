"""The vertical protocol over Flower: ClientApp handlers, FlowerLink, error replies, a real simulation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Message, RecordDict

from clients.vertical.data import make_vertical_split
from clients.vertical.handlers import load_party, party_data
from clients.vertical.predict import predict_saved
from protocol.codec import to_flat
from simulations.app import build_client_app
from strategies.vertical_flower import FlowerLink, run_vertical
from strategies.vertical_prototype import ACTIVE, VerticalProtocolError
from tests.fake_grid import task_identity
from tests.vertical_helpers import flower_config, party_grid, run_in_process

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores


@pytest.fixture(autouse=True)
def flower_task_identity() -> Iterator[None]:
    """Outside a ServerApp process Flower's ``Message`` needs a task identity; set one, then restore."""
    with task_identity():
        yield


def test_flower_handlers_reproduce_the_in_process_run(tmp_path: Path) -> None:
    # Prepare: the same config through Flower messages (state in context.state) and in process
    cfg = flower_config(output_dir=str(tmp_path))
    # Execute
    over_flower = run_vertical(party_grid(2, output_dir=str(tmp_path)), cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    direct = run_in_process(dataclasses.replace(cfg, output_dir=""))
    # Assert: identical training, models saved, predict entry points agree with the evaluation
    assert over_flower["test"] == pytest.approx(direct["test"])
    assert over_flower["attack"] == pytest.approx(direct["attack"])
    passive = party_data(cfg, 1)
    feats = predict_saved(over_flower["models"]["passive1"], passive.test_x)
    active = party_data(cfg, 0)
    preds = predict_saved(over_flower["models"][ACTIVE], active.test_x, [feats["features"]])
    assert np.mean(preds["aligned"] == active.test_y) == pytest.approx(over_flower["test"]["aligned"])
    assert np.mean(feats["classes"] == active.test_y) == pytest.approx(over_flower["test"]["passive_only_1"])


def test_psi_alignment_gives_every_party_the_true_intersection_in_one_order() -> None:
    grid = party_grid(3)
    cfg = flower_config(n_parties=3, dataset="breast_cancer", epochs=1, alignment="psi", psi_key_bits=512)
    res = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    truth = make_vertical_split("breast_cancer", n_parties=3, aligned_fraction=0.1, seed=0).aligned_ids
    orders = []
    for context in grid.contexts.values():
        party = load_party(context, cfg)
        assert party.aligned_rows is not None
        orders.append(party.data.ids[party.aligned_rows].tolist())
    assert sorted(orders[0]) == truth.tolist() and orders[0] == orders[1] == orders[2]
    assert res["alignment"]["method"] == "psi" and res["alignment"]["aligned_size"] == len(truth)


def test_three_parties_over_flower_handlers() -> None:
    res = run_vertical(party_grid(3), flower_config(n_parties=3, dataset="breast_cancer", epochs=8),  # type: ignore[arg-type]
                       node_wait_timeout=1)
    assert res["test"]["aligned"] > 0.8
    assert {"passive1_exact", "passive2_exact"} <= set(res["attack"])


@pytest.mark.parametrize(("name", "fail", "match"), [
    ("error_reply", {101: "error"}, "failed operation 'describe': simulated failure"),
    ("vanished_party", {101: "vanish"}, "did not reply .* vanished"),
])
def test_failing_or_vanished_party_ends_the_run(name: str, fail: dict[int, str], match: str) -> None:
    with pytest.raises(VerticalProtocolError, match=match):
        run_vertical(party_grid(2, fail), flower_config(), node_wait_timeout=1)  # type: ignore[arg-type]


def test_error_reply_mid_round_is_reported_with_the_operation() -> None:
    grid = party_grid(2)
    cfg = flower_config()
    link = FlowerLink(grid, {ACTIVE: 100, "passive1": 101}, to_flat(cfg), timeout=1)  # type: ignore[arg-type]
    link.request({n: ("describe", {}) for n in link.parties})
    with pytest.raises(VerticalProtocolError, match="passive1 failed operation 'snapshot'.*before alignment"):
        link.request({"passive1": ("snapshot", {})})


def test_wrong_number_of_nodes_is_rejected() -> None:
    with pytest.raises(VerticalProtocolError, match=r"party index must be in \[0, 2\)"):
        run_vertical(party_grid(3), flower_config(), node_wait_timeout=1)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError, match="only 2 of 3 nodes"):
        run_vertical(party_grid(2), flower_config(n_parties=3, dataset="breast_cancer"), node_wait_timeout=0.1)  # type: ignore[arg-type]


def test_ray_simulation_beats_aligned_only_vfl() -> None:
    """Fast end-to-end run on Flower's simulation engine: digits halves, 2 parties, alignment included."""
    from simulations.vertical import run_vertical_simulation

    # Ray actors start slowly on a loaded 2-core machine: a generous reply timeout keeps this honest
    cfg = flower_config(epochs=15, alignment="psi", psi_key_bits=512, timeout_s=600.0)
    proto = run_vertical_simulation(cfg, client_app=build_client_app(allow_insecure_psi_keys=True, allow_plaintext_ids=True))
    aligned_only = run_in_process(dataclasses.replace(
        cfg, strategy=dataclasses.replace(cfg.strategy, local_head=False, prototypes=False)))
    assert proto["alignment"]["aligned_size"] == proto["n_aligned"] == aligned_only["n_aligned"] > 0
    assert proto["test"]["aligned"] > aligned_only["test"]["aligned"]


def test_predict_command_line_per_role(tmp_path: Path) -> None:
    from clients.vertical.predict import main as predict_main

    cfg = flower_config(output_dir=str(tmp_path), epochs=2)
    res = run_vertical(party_grid(2, output_dir=str(tmp_path)), cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    active, passive = party_data(cfg, 0), party_data(cfg, 1)
    np.save(tmp_path / "xa.npy", active.test_x)
    np.save(tmp_path / "xp.npy", passive.test_x)
    predict_main(["--model", res["models"]["passive1"], "--inputs", str(tmp_path / "xp.npy"),
                  "--out", str(tmp_path / "p.npz")])
    predict_main(["--model", res["models"][ACTIVE], "--inputs", str(tmp_path / "xa.npy"),
                  "--passive-features", str(tmp_path / "p.npz"), "--out", str(tmp_path / "a.npz")])
    aligned = np.load(tmp_path / "a.npz")["aligned"]
    assert np.mean(aligned == active.test_y) == pytest.approx(res["test"]["aligned"])


@pytest.mark.slow
def test_ray_simulation_with_three_parties() -> None:
    """Three parties on Flower's simulation engine, PSI alignment included (run with ``-m slow``)."""
    from simulations.vertical import run_vertical_simulation

    cfg = flower_config(n_parties=3, dataset="breast_cancer", epochs=8, alignment="psi", psi_key_bits=512, timeout_s=600.0)
    res = run_vertical_simulation(cfg, client_app=build_client_app(allow_insecure_psi_keys=True, allow_plaintext_ids=True))
    assert res["alignment"]["aligned_size"] == res["n_aligned"] > 0
    assert res["test"]["aligned"] > 0.8
    assert {"passive1_exact", "passive2_exact"} <= set(res["attack"])


def test_production_app_refuses_to_hand_out_raw_ids() -> None:
    # The ClientApp `flwr run` uses serves no plaintext IDs, whatever the server asks for.
    from simulations.app import client_app
    from tests.fake_grid import InProcessGrid, simulation_nodes

    grid = InProcessGrid(client_app, simulation_nodes(2))
    msg = Message(RecordDict(), dst_node_id=1000, message_type="query.vfl_ids")
    reply = grid.send_and_receive([msg])[0]
    assert reply.has_error() and "does not hand out its raw IDs" in reply.error.reason


def test_parties_holding_different_psi_alignments_stop_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # A party whose stored alignment differs (e.g. left over from an aborted earlier run) is caught
    # before the first round: the parties report their alignment IDs and the server compares them.
    import clients.vertical.handlers as vertical_party

    real = vertical_party.psi_alignment
    calls = iter(range(10))

    def drifting(context, party):
        ids, alignment_id = real(context, party)
        return ids, f"{alignment_id}-{next(calls)}"

    monkeypatch.setattr(vertical_party, "psi_alignment", drifting)
    cfg = flower_config(n_parties=2, dataset="breast_cancer", epochs=1, alignment="psi", psi_key_bits=512)
    with pytest.raises(VerticalProtocolError, match="parties hold different PSI alignments"):
        run_vertical(party_grid(2), cfg, node_wait_timeout=1)  # type: ignore[arg-type]


def test_parties_decode_the_config_once_and_only_describe_carries_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import clients.vertical.handlers as vertical_party
    from protocol.vertical import CONFIG_KEY, MESSAGE_TYPES

    decoded = []
    real = vertical_party.from_record
    monkeypatch.setattr(vertical_party, "from_record", lambda *a, **k: decoded.append(1) or real(*a, **k))
    vertical_party.decoded_config.cache_clear()
    grid = party_grid(2)
    run_vertical(grid, flower_config(epochs=2), node_wait_timeout=1)  # type: ignore[arg-type]
    assert len(decoded) == 1  # both in-process nodes hold the same record: one decode in this process
    with_config = {m.metadata.message_type for m in grid.sent if CONFIG_KEY in m.content.config_records}
    assert with_config == {MESSAGE_TYPES["describe"]}


def test_a_party_refuses_a_config_naming_field_and_value() -> None:
    flat = {**to_flat(flower_config()), "dataset.aligned_fraction": 1.5}
    link = FlowerLink(party_grid(2), {ACTIVE: 100, "passive1": 101}, flat, timeout=1)  # type: ignore[arg-type]
    with pytest.raises(VerticalProtocolError, match=r"dataset.aligned_fraction must be in \(0, 1\], got 1.5"):
        link.request({n: ("describe", {}) for n in link.parties})


def test_the_server_side_imports_neither_torch_nor_party_code() -> None:
    import subprocess
    import sys

    code = ("import sys, strategies.vertical_prototype, strategies.vertical_flower; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'clients', 'simulations', 'hydra'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["../evil.pt", "/tmp/evil.pt", "sub/dir.pt", ".hidden.pt"])
def test_a_party_saves_only_under_its_own_folder(tmp_path: Path, name: str) -> None:
    cfg = flower_config(output_dir="ignored-by-the-nodes", epochs=1)
    grid = party_grid(2, output_dir=str(tmp_path))
    res = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    assert res["models"] == {p: str(tmp_path.resolve() / f"{p}.pt") for p in (ACTIVE, "passive1")}
    link = FlowerLink(grid, {ACTIVE: 100, "passive1": 101}, to_flat(cfg), timeout=1)  # type: ignore[arg-type]
    with pytest.raises(VerticalProtocolError, match="vertical save name must be a bare file name"):
        link.request({"passive1": ("save", {"name": name})})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{ACTIVE}.pt", "passive1.pt"]
    assert not Path("ignored-by-the-nodes").exists()
