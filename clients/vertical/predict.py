"""A saved vertical party model's predictions: :func:`predict_saved` and its command line.

A party saves its model with the ``save`` operation (a ``.pt`` file of weights, prototypes, the run's
configuration and the fusion it chose); this module serves it locally, per role::

    python -m clients.vertical.predict --model passive1.pt --inputs x.npy --out passive1.npz
    python -m clients.vertical.predict --model active.pt --inputs x.npy --passive-features passive1.npz \
        --out active.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clients.encoders import build_encoder
from clients.training import check_inputs
from clients.vertical.fusion import fuse, prototype_scores
from clients.vertical.party_base import build_top_model
from clients.vertical.prototypes import check_features, nearest_prototype
from protocol.codec import from_flat
from protocol.vertical import PASSIVE, VerticalConfig, configured_fusion

__all__ = ["RENAMED_KEYS", "main", "predict_saved"]

RENAMED_KEYS: dict[str, str] = {
    "out_dir": "output_dir",
    "strategy.timeout": "strategy.timeout_s",
    "strategy.psi_timeout": "strategy.psi_timeout_s",
}
"""Config keys of model files saved by earlier releases → their current names."""


def predict_saved(
    path: str | Path, x: np.ndarray, passive_features: list[np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Predict with a model file written by the ``save`` operation (the per-role predict entry point).

    A passive model returns its ``features`` (to send to the active party) and ``classes`` by nearest
    prototype; an active model returns ``active_only`` classes and, given every passive party's features
    of the same users, ``aligned`` classes (top model, local head and prototype scores fused with the
    weights the run chose, :mod:`clients.vertical.fusion`). Model files of earlier releases, whose
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


def main(argv: list[str] | None = None) -> None:
    """Predict entry point per role over a saved party model (written by the ``save`` operation).

    ``python -m clients.vertical.predict --model passive1.pt --inputs x.npy --out passive1.npz`` writes the
    passive party's ``features`` (to hand to the active party) and nearest-prototype ``classes``;
    ``python -m clients.vertical.predict --model active.pt --inputs x.npy --passive-features passive1.npz
    --out active.npz`` writes ``active_only`` and, with every passive party's features, ``aligned`` classes.
    """
    parser = argparse.ArgumentParser(description="predict with a saved vertical party model")
    parser.add_argument("--model", required=True, help="a .pt file written by the save operation")
    parser.add_argument("--inputs", required=True, help=".npy of this party's columns, (N, *input_shape)")
    parser.add_argument("--passive-features", nargs="*", default=None,
                        help="active party only: each passive party's .npz output, in party order")
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    passive = [np.load(p)["features"] for p in args.passive_features] if args.passive_features else None
    np.savez(args.out, **predict_saved(args.model, np.load(args.inputs), passive))


if __name__ == "__main__":
    main()
