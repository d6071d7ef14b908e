"""What each party of the vertical prototype exchange computes (plain torch; no Flower here).

:class:`ActiveParty` (label holder: encoder, top model, local head; :mod:`clients.vertical_active`) and
:class:`PassiveParty` (encoder; :mod:`clients.vertical_passive`), on the shared
:class:`clients.vertical_base.Party`, expose the protocol as named operations,
``party.handle(op, payload) -> reply`` with payloads of numpy arrays and scalars. The Flower ClientApp
(:mod:`clients.vertical_party`) and the in-process link used by the benchmark call exactly these
operations, so both run the same method. A party's whole state round-trips through ``state_bytes`` /
``from_state`` so a Flower node can keep it in ``context.state`` between messages.

One epoch (driven by :mod:`strategies.vertical_prototype`):

1. aligned minibatches (split learning, Vepakomma et al. 2018), ``steps_per_exchange`` per exchange:
   passive ``step`` returns features of the minibatches (and applies the gradients of the previous
   exchange); active ``step`` trains encoder + top model with cross-entropy and returns each passive party
   the gradients w.r.t. its features;
2. prototypes (patent method, DESIGN.md §4): passive ``snapshot`` sends the features of all aligned users;
   active ``prototypes`` computes its own class prototypes (EMA-smoothed) and, for each passive party,
   prototypes in that party's space (clipped / noised per :mod:`clients.prototype_privacy`); passive
   ``receive`` smooths them (EMA, post-processing);
3. ``local``: the active party trains its encoder + local head on all its labelled rows plus
   ``lam`` × first loss on its non-aligned rows. A passive party's third loss (``lam_passive`` × pull of
   non-aligned rows towards confident nearest-prototype pseudo-labels) rides along with each of its
   split-learning steps in (1), one random non-aligned minibatch per step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from clients.encoders import build_encoder
from clients.prototypes import (
    check_features,
    nearest_prototype,
)
from clients.training import check_inputs
from clients.vertical_active import ActiveParty
from clients.vertical_base import build_top_model
from clients.vertical_data import PartyData
from clients.vertical_fusion import fuse, prototype_scores
from clients.vertical_passive import PassiveParty
from protocol.codec import from_flat
from protocol.vertical import (
    ACTIVE,
    PASSIVE,
    VerticalConfig,
    configured_fusion,
)

__all__ = ["ActiveParty", "PassiveParty", "build_top_model", "make_party", "predict_saved"]

RENAMED_KEYS: dict[str, str] = {
    "out_dir": "output_dir",
    "strategy.timeout": "strategy.timeout_s",
    "strategy.psi_timeout": "strategy.psi_timeout_s",
}
"""Config keys of model files saved by earlier releases → their current names."""



def make_party(data: PartyData, cfg: VerticalConfig, blob: bytes | None = None) -> ActiveParty | PassiveParty:
    """The party object for ``data``'s role, restored from ``blob`` if given."""
    kind = ActiveParty if data.role == ACTIVE else PassiveParty
    return kind.from_state(data, cfg, blob)  # type: ignore[return-value]


def predict_saved(
    path: str | Path, x: np.ndarray, passive_features: list[np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Predict with a model file written by the ``save`` operation (the per-role predict entry point).

    A passive model returns its ``features`` (to send to the active party) and ``classes`` by nearest
    prototype; an active model returns ``active_only`` classes and, given every passive party's features
    of the same users, ``aligned`` classes (top model, local head and prototype scores fused with the
    weights the run chose, :mod:`clients.vertical_fusion`). Model files of earlier releases, whose
config used the earlier key names (:data:`RENAMED_KEYS`), load too.

    Raises
    ------
    ValueError
        If ``x`` does not match the saved input shape or holds NaN/inf.
    """
    record = torch.load(Path(path), weights_only=True)
    saved = {RENAMED_KEYS.get(key, key): value for key, value in record["config"].items()}
    cfg = from_flat(VerticalConfig, saved, what="saved model config")
    shape, n_classes = tuple(record["input_shape"]), int(record["n_classes"])
    xt = torch.from_numpy(check_inputs(x, shape, "inputs"))
    m = cfg.model
    encoder = build_encoder(shape, kind=m.encoder, feature_dim=m.feature_dim, hidden=m.hidden)
    encoder.load_state_dict(record["modules"]["encoder"])
    encoder.eval()
    prototypes, valid = record["prototypes"], record["valid"]
    with torch.no_grad():
        features = encoder(xt)
        if record["role"] == PASSIVE:
            classes = (nearest_prototype(features, prototypes, valid) if prototypes is not None
                       else torch.full((len(xt),), -1, dtype=torch.long))
            return {"features": features.numpy(), "classes": classes.numpy()}
        head = nn.Linear(m.feature_dim, n_classes)
        head.load_state_dict(record["modules"]["head"])
        top = build_top_model(cfg.dataset.n_parties, m.feature_dim, m.top_hidden, n_classes)
        top.load_state_dict(record["modules"]["top"])
        head_logp = torch.log_softmax(head(features), dim=1)
        if cfg.strategy.local_head:  # as the active party predicts (ActiveParty.predict)
            active_only = head_logp.argmax(dim=1)
        elif prototypes is not None:
            active_only = nearest_prototype(features, prototypes, valid)
        else:  # no predictor of active-only users in this run: -1, as the results' null
            active_only = torch.full((len(xt),), -1, dtype=torch.long)
        out = {"active_only": active_only.numpy()}
        if passive_features is not None:
            passive = [torch.as_tensor(np.asarray(f, dtype=np.float32)) for f in passive_features]
            for k, f in enumerate(passive, start=1):
                check_features(f, what=f"features of passive party {k}", dim=m.feature_dim)
            private = [(p, v) for p, v in record.get("passive_prototypes", [])]
            components = {
                "head": head_logp,
                "top": torch.log_softmax(top(torch.cat([features, *passive], dim=1)), dim=1),
                "proto": prototype_scores(passive, private, n_classes, cfg.strategy.temperature_scale),
            }
            fusion = record.get("fusion") or configured_fusion(cfg.strategy)
            if not cfg.strategy.split_learning:  # files of earlier releases stored (1, 1, 0) here
                fusion = configured_fusion(cfg.strategy)
            out["aligned"] = fuse(components, (fusion[0], fusion[1], fusion[2])).argmax(dim=1).numpy()
    return out
