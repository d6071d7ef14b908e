"""The PSI alignment phase through Flower's simulation engine (Ray): three parties, real messages,
both backends; and the vertical run's ``strategy.psi_backend`` reaching the alignment.

The ClientApp is a tiny test app: ``load_ids`` gives synthetic ID sets per ``partition-id``, a
``query.describe`` handler tells the server which node is which party, and ``query.show_alignment``
returns what ``get_alignment`` reads at the node so the test can compare all parties.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from clients.psi import canonical_id_bytes
from clients.psi.handlers import get_alignment, register_psi_handlers
from clients.vertical.data import make_vertical_split
from clients.vertical.handlers import load_party
from protocol.codec import from_flat
from protocol.vertical import VerticalConfig, VerticalStrategyConfig
from simulations.flower_sim import run_flower_simulation
from simulations.vertical_config import register_configs
from strategies.alignment import AlignmentError, AlignmentReport, run_alignment
from strategies.vertical_flower import run_vertical
from tests.fake_grid import task_identity
from tests.vertical_helpers import flower_config, party_grid

pytestmark = pytest.mark.filterwarnings("ignore::clients.psi.InsecureParameterWarning")

IDS: dict[int, Sequence[str | int]] = {
    0: [f"patient-{i}" for i in range(120)],  # the label holder
    1: [f"patient-{i}" for i in range(200, 30, -1)],
    2: [*range(7), *(f"patient-{i}" for i in range(0, 300, 2))],  # mixed str / int IDs
}
EXPECTED = set(IDS[0]) & set(IDS[1]) & set(IDS[2])
ROOT = Path(__file__).resolve().parents[1]


def load_ids(context: Context) -> Sequence[str | int]:
    return IDS[int(context.node_config["partition-id"])]


app = ClientApp()
register_psi_handlers(app, load_ids, workers=1, allow_insecure_key_size=True)


def describe(message: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    return Message(RecordDict({"info": ConfigRecord({"partition-id": partition})}), reply_to=message)


def show_alignment(message: Message, context: Context) -> Message:
    alignment = get_alignment(context)
    record = ConfigRecord(
        {
            "ids": [canonical_id_bytes(identifier) for identifier in alignment.ids],
            "rows": list(alignment.rows),
            "alignment_id": alignment.alignment_id,
        }
    )
    return Message(RecordDict({"alignment": record}), reply_to=message)


def partitions(grid: Grid) -> dict[int, int]:
    """partition-id → node ID, asked of the nodes themselves (node IDs are random)."""
    messages = [
        Message(RecordDict(), dst_node_id=node_id, message_type="query.describe")
        for node_id in grid.get_node_ids()
    ]
    replies = grid.send_and_receive(messages, timeout=300)  # Ray starts the node actors lazily: slow on a busy machine
    return {
        int(reply.content.config_records["info"]["partition-id"]): reply.metadata.src_node_id
        for reply in replies
    }


def stored_alignments(grid: Grid, nodes: dict[int, int]) -> dict[int, dict]:
    """partition-id → what ``get_alignment`` reads at that node."""
    messages = [
        Message(RecordDict(), dst_node_id=nodes[pid], message_type="query.show_alignment") for pid in range(3)
    ]
    replies = grid.send_and_receive(messages, timeout=60)
    by_node = {
        reply.metadata.src_node_id: dict(reply.content.config_records["alignment"]) for reply in replies
    }
    return {pid: by_node[nodes[pid]] for pid in range(3)}


def server_main(grid: Grid, context: Context) -> tuple[dict[str, AlignmentReport], dict[str, dict], str]:
    nodes = partitions(grid)
    reports, stored = {}, {}
    for backend, chunk_bytes in (("paillier", 8192), ("ecdh", 1024)):
        reports[backend] = run_alignment(
            grid,
            receiver_node=nodes[0],
            sender_nodes=[nodes[1], nodes[2]],
            timeout=120,
            key_bits=512,
            chunk_bytes=chunk_bytes,
            backend=backend,  # type: ignore[arg-type]
        )
        stored[backend] = stored_alignments(grid, nodes)
    # A failing alignment through the engine: the label holder refuses a 128-bit key even with the
    # test flag; the error must name the party and the step and keep the first alignment.
    try:
        run_alignment(grid, receiver_node=nodes[0], sender_nodes=[nodes[1]], timeout=60, key_bits=128)
        failure = "no error"
    except AlignmentError as exc:
        failure = f"{exc.node_id == nodes[0]}|{exc.step}|{exc}"
    return reports, stored, failure


def test_three_party_alignment_through_the_simulation_engine() -> None:
    # Execute: a Paillier alignment, then an ECDH one that replaces it
    reports, stored, failure = run_flower_simulation(server_main, app, num_supernodes=3)
    # Assert: every node stored the same IDs in the same order; rows point at the node's own IDs;
    # both backends give the same IDs in the same order
    ids = stored["paillier"][0]["ids"]
    assert {canonical_id_bytes(identifier) for identifier in EXPECTED} == set(ids)
    for backend, report in reports.items():
        assert report.aligned_size == len(EXPECTED) > 0 and report.backend == backend
        for pid in range(3):
            assert stored[backend][pid]["ids"] == ids
            assert stored[backend][pid]["alignment_id"] == report.alignment_id
            assert [canonical_id_bytes(IDS[pid][row]) for row in stored[backend][pid]["rows"]] == ids
        assert [pair.intersection_size for pair in report.pairs] == [
            len(set(IDS[0]) & set(IDS[1])),
            len(EXPECTED),
        ]
    assert reports["ecdh"].pairs[0].coefficient_chunks == 4  # 120 points, 32 per 1024-byte chunk
    # The failed second alignment named the label holder and the key-generation step
    assert failure.startswith("True|psi_keygen|")
    assert "key_bits must be an even number >= 256, got 128" in failure


pool_app = ClientApp()
register_psi_handlers(pool_app, load_ids, workers=2)  # 2048-bit keys, process pools inside Ray actors
for client_app in (app, pool_app):
    client_app.query("describe")(describe)
    client_app.query("show_alignment")(show_alignment)


@pytest.mark.slow
def test_default_keys_and_process_pools_through_the_simulation_engine() -> None:
    def main(grid: Grid, context: Context) -> AlignmentReport:
        nodes = sorted(grid.get_node_ids())
        return run_alignment(grid, receiver_node=nodes[0], sender_nodes=nodes[1:], timeout=600)

    report = run_flower_simulation(main, pool_app, num_supernodes=3)
    sizes = sorted(len(ids) for ids in IDS.values())
    assert sorted(report.set_sizes.values()) == sizes
    assert report.aligned_size == len(EXPECTED)
    assert report.pairs[0].coefficient_bytes % 512 == 0  # 2048-bit key: 512-byte ciphertexts


@pytest.mark.slow
def test_ecdh_with_process_pools_through_the_simulation_engine() -> None:
    def main(grid: Grid, context: Context) -> tuple[AlignmentReport, dict[int, dict]]:
        nodes = partitions(grid)
        report = run_alignment(
            grid, receiver_node=nodes[0], sender_nodes=[nodes[1], nodes[2]], timeout=600, backend="ecdh"
        )
        return report, stored_alignments(grid, nodes)

    report, stored = run_flower_simulation(main, pool_app, num_supernodes=3)
    assert report.aligned_size == len(EXPECTED) and report.backend == "ecdh"
    for pid in range(3):
        assert [canonical_id_bytes(IDS[pid][row]) for row in stored[pid]["rows"]] == stored[0]["ids"]


def test_psi_backend_is_a_validated_hydra_and_run_config_key() -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "vertical"), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=["strategy.psi_backend=ecdh"]))
    assert cfg.strategy.psi_backend == "ecdh"  # type: ignore[union-attr]
    assert from_flat(VerticalConfig, {"strategy.psi_backend": "ecdh"}, what="run_config").strategy.psi_backend == "ecdh"
    with pytest.raises(ValueError, match="strategy.psi_backend must be one of .*got 'rsa'"):
        VerticalStrategyConfig(psi_backend="rsa").validate()


@pytest.fixture
def flower_task_identity() -> Iterator[None]:
    with task_identity():
        yield


@pytest.mark.usefixtures("flower_task_identity")
def test_vertical_run_config_selects_the_ecdh_backend() -> None:
    # Prepare: strategy.psi_backend=ecdh in the vertical configuration
    grid = party_grid(3)
    cfg = flower_config(n_parties=3, dataset="breast_cancer", epochs=1, alignment="psi", psi_backend="ecdh")
    # Execute
    res = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    # Assert: the ECDH alignment gave every party the true intersection in one order
    truth = make_vertical_split("breast_cancer", n_parties=3, aligned_fraction=0.1, seed=0).aligned_ids
    orders = []
    for context in grid.contexts.values():
        party = load_party(context, cfg)
        assert party.aligned_rows is not None
        orders.append(party.data.ids[party.aligned_rows].tolist())
    assert sorted(orders[0]) == truth.tolist() and orders[0] == orders[1] == orders[2]
    assert res["alignment"]["backend"] == "ecdh" and res["alignment"]["aligned_size"] == len(truth)
