"""Checks of a vertical simulation's parties before any node starts (issue 24 §6).

``python -m simulations.vertical`` runs every party on this machine, so the command reads every party's
data here first (:func:`clients.vertical.handlers.party_data`, cached for the run) and refuses what the
protocol would only find out on the nodes, with a message naming the party and the value: an encoder
that does not fit a party's feature shape (the nodes would all fail at ``describe``), parties without a
training user in common (PSI would find an empty intersection), parties that declare different
validation or test users or class counts. A deployment's parties never show each other their IDs; there
the protocol's own checks (:class:`strategies.vertical_prototype.VerticalProtocolError`) still apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from clients.encoders import build_encoder
from clients.vertical.data import PartyData
from protocol.vertical import VerticalConfig

HELD_OUT = (("val_ids", "validation"), ("test_ids", "test"))


def check_encoders(cfg: VerticalConfig, parties: Sequence[PartyData]) -> None:
    """Refuse ``model.encoder`` if it cannot encode some party's features (ValueError naming the
    encoder, the party and its feature shape)."""
    m = cfg.model
    for party in parties:
        try:
            build_encoder(party.input_shape, kind=m.encoder, feature_dim=m.feature_dim, hidden=m.hidden)
        except ValueError as err:
            raise ValueError(f"model.encoder={m.encoder!r} does not fit party {party.index} ({party.name}), "
                             f"whose features have shape {party.input_shape}: {err}") from err


def check_users(cfg: VerticalConfig, parties: Sequence[PartyData]) -> None:
    """Refuse parties that hold different numbers of classes or validation/test users, or (for split
    learning) no training user in common (ValueError naming the parties and a user that differs)."""
    first = parties[0]
    for party in parties[1:]:
        if party.n_classes != first.n_classes:
            raise ValueError(f"party {party.index} declares {party.n_classes} classes, party 0 "
                             f"{first.n_classes}: every party must declare the label holder's classes")
        for field, what in HELD_OUT:
            ours, theirs = set(getattr(first, field).tolist()), set(getattr(party, field).tolist())
            if ours != theirs:
                only = [f"{sorted(a - b)[0]!r} is at party {k} only ({len(a - b)} in all)"
                        for a, b, k in ((ours, theirs, 0), (theirs, ours, party.index)) if a - b]
                raise ValueError(f"parties 0 and {party.index} hold different {what} users: "
                                 f"{', '.join(only)}; every party must declare the same {what} users")
    if not cfg.strategy.split_learning:
        return
    common = set.intersection(*(set(p.ids.tolist()) for p in parties))
    if not common:
        held = "; ".join(f"party {p.index} holds {len(p.ids)} (e.g. {p.ids[:1].tolist()[0]!r})" if len(p.ids)
                         else f"party {p.index} holds none" for p in parties)
        raise ValueError(f"the parties share no training user, and split learning aligns on the users "
                         f"every party holds: {held}; a user must have the same ID at every party")


def check_parties(cfg: VerticalConfig, parties: Sequence[PartyData]) -> None:
    """:func:`check_encoders` and :func:`check_users`: everything refused before the run starts."""
    check_encoders(cfg, parties)
    check_users(cfg, parties)
