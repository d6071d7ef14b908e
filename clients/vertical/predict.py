"""A saved vertical party model's predictions: :func:`predict_saved` and its command line.

A party saves its model with the ``save`` operation (a ``.pt`` file of weights, prototypes, the run's
configuration and the fusion it chose); this module serves it locally, per role::

    python -m clients.vertical.predict --model passive1.pt --inputs x.npy --out passive1.npz
    python -m clients.vertical.predict --model active.pt --inputs x.npy --passive-features passive1.npz \
        --out active.npz
"""

from __future__ import annotations

import argparse
import pickle
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clients.encoders import build_encoder
from clients.training import check_inputs
from clients.vertical.fusion import fuse, prototype_scores
from clients.vertical.guard import LOCAL, apply_choice
from clients.vertical.party_base import build_top_model
from clients.vertical.prototypes import check_features, nearest_prototype
from protocol.codec import from_flat
from protocol.vertical import PASSIVE, VerticalConfig, configured_fusion

__all__ = ["RENAMED_KEYS", "baseline_classes", "main", "predict_saved"]

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
    weights the run chose, :mod:`clients.vertical.fusion`); a population for which the run's guard chose
    the label holder's local-only baseline (:mod:`clients.vertical.guard`) gets the baseline's classes,
    as in the run's evaluation. Model files of earlier releases, whose
config used the earlier key names (:data:`RENAMED_KEYS`), load too.

    Raises
    ------
    FileNotFoundError
        If the model file does not exist.
    ValueError
        If it is not a saved party model, its sizes ask for a model beyond
        :data:`clients.encoders.MAX_PARAMETERS` weights, or ``x`` does not match the saved input shape or
        holds NaN/inf.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        record = torch.load(Path(path), weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"model file {path} is not a saved party model: {reason}") from None
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
        chosen = {p: c for p, c in record.get("guard", {}).items() if p in out}
        if LOCAL in chosen.values():
            local = baseline_classes(record["baseline"], xt, shape, cfg, n_classes)
            out = {p: c.numpy() for p, c in apply_choice(
                {p: torch.from_numpy(c) for p, c in out.items()}, local, chosen).items()}
    return out


def baseline_classes(
    modules: dict[str, dict[str, torch.Tensor]], x: torch.Tensor, shape: tuple[int, ...], cfg: VerticalConfig,
    n_classes: int,
) -> torch.Tensor:
    """Classes of the label holder's local-only baseline saved beside its model (``modules``: the
    baseline's ``encoder`` and ``head`` weights)."""
    m = cfg.model
    encoder = build_encoder(shape, kind=m.encoder, feature_dim=m.feature_dim, hidden=m.hidden)
    encoder.load_state_dict(modules["encoder"])
    encoder.eval()
    head = nn.Linear(m.feature_dim, n_classes)
    head.load_state_dict(modules["head"])
    with torch.no_grad():
        return head(encoder(x)).argmax(dim=1)


def main(argv: list[str] | None = None) -> None:
    """Predict entry point per role over a saved party model (written by the ``save`` operation).

    ``python -m clients.vertical.predict --model passive1.pt --inputs x.npy --out passive1.npz`` writes the
    passive party's ``features`` (to hand to the active party) and nearest-prototype ``classes``;
    ``python -m clients.vertical.predict --model active.pt --inputs x.npy --passive-features passive1.npz
    --out active.npz`` writes ``active_only`` and, with every passive party's features, ``aligned`` classes.
    A bad input (a missing or unreadable file, a model too large or not fitting its sizes, inputs of the
    wrong shape, a missing output folder) ends with one ``error:`` line and exit status 2.
    """
    parser = argparse.ArgumentParser(description="predict with a saved vertical party model")
    parser.add_argument("--model", required=True, help="a .pt file written by the save operation")
    parser.add_argument("--inputs", required=True, help=".npy of this party's columns, (N, *input_shape)")
    parser.add_argument("--passive-features", nargs="*", default=None,
                        help="active party only: each passive party's .npz output, in party order")
    parser.add_argument("--out", required=True, type=Path,
                        help="output .npz, written to this exact path (suffix or not)")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    args = parser.parse_args(argv)
    try:
        if not args.out.resolve().parent.is_dir():
            raise FileNotFoundError(f"output folder {args.out.resolve().parent} of --out does not exist")
        passive = ([_load(p, "passive features file", "features") for p in args.passive_features]
                   if args.passive_features else None)
        out = predict_saved(args.model, _load(args.inputs, "inputs file"), passive)
        with args.out.open("wb") as handle:  # the name as given: np.savez(name) would append .npz
            np.savez(handle, **out)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        raise SystemExit(2) from None


def _load(path: str, what: str, key: str | None = None) -> np.ndarray:
    """The array of a ``.npy`` file, or array ``key`` of an ``.npz`` file (no pickles).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not such a file or lacks ``key``.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if key is None:
            if not isinstance(loaded, np.ndarray):
                raise ValueError("an .npz archive, expected one .npy array")
            return loaded
        with loaded:
            return loaded[key]
    except (ValueError, OSError, EOFError, KeyError) as err:
        raise ValueError(f"{what} {path} is not readable{'' if key is None else f' (array {key!r})'}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


if __name__ == "__main__":
    main()
