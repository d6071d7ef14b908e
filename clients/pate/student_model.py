"""The saved student model (weights ``.pt`` + metadata ``.json``) and local serving from it.

::

    python -m clients.pate.student predict --model runs/x/student_model.json --input X.npy [--output y.npy]

Every bad input — a missing, empty or corrupt file, metadata that is not a student model's, weights
that do not fit the model the metadata describes, samples of the wrong shape or type, an empty batch,
an output folder that does not exist — ends as one line ``error: <what>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clients.encoders import Classifier, build_classifier
from clients.training import check_inputs, predict_logits
from protocol.codec import from_flat, is_bare_name
from protocol.pate import ModelSpec

MODEL_FORMAT = "flwr-privkit/student/1"
REQUIRED_KEYS = ("format", "weights", "input_shape", "classes", "model")


def save_student(model: Classifier, path: Path, metadata: dict[str, Any]) -> Path:
    """Save weights to ``<path>.pt`` and metadata to ``<path>.json``, each atomically; return the JSON
    path."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = path.with_suffix(".pt")
    tmp_weights = weights.with_suffix(".pt.tmp")
    torch.save(model.state_dict(), tmp_weights)
    os.replace(tmp_weights, weights)  # never a half-written model under the final name
    meta = {"format": MODEL_FORMAT, "weights": weights.name, **metadata}
    meta_path = path.with_suffix(".json")
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)
    return meta_path


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    """The checked metadata JSON of a saved student (see :func:`load_student` for the errors)."""
    try:
        text = meta_path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {meta_path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"model file {meta_path} cannot be read: {err}") from None
    if not text.strip():
        raise ValueError(f"model file {meta_path} is empty")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"model file {meta_path} is not JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"model file {meta_path} must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{meta_path} is not a flwr-privkit student model (format {meta.get('format')!r})")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise ValueError(f"model file {meta_path} lacks {missing}")
    shape, classes = meta["input_shape"], meta["classes"]
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d >= 1 for d in shape)):
        raise ValueError(f"model file {meta_path}: input_shape must be a list of integers >= 1, got "
                         f"{shape!r}")
    if not (isinstance(classes, list) and len(classes) >= 2):
        raise ValueError(f"model file {meta_path}: classes must be a list of at least 2, got {classes!r}")
    if not isinstance(meta["model"], dict):
        raise ValueError(f"model file {meta_path}: model must be an object, got {meta['model']!r}")
    if not is_bare_name(meta["weights"]):
        raise ValueError(f"model file {meta_path}: weights must name a file beside it, got "
                         f"{meta['weights']!r}")
    return meta


def load_student(meta_path: Path) -> tuple[Classifier, dict[str, Any]]:
    """Load a model saved by :func:`save_student`.

    Raises
    ------
    FileNotFoundError
        If the metadata or weights file is missing.
    ValueError
        If the metadata is empty, not JSON, not an object, not a flwr-privkit student model or lacks a
        key; or the weights file is corrupt or does not fit the model the metadata describes.
    """
    meta_path = Path(meta_path)
    if meta_path.suffix != ".json":
        meta_path = meta_path.with_suffix(".json")
    meta = _read_metadata(meta_path)
    stored = dict(meta["model"])
    if "kind" in stored:  # files written before ModelSpec.kind was renamed encoder
        stored["encoder"] = stored.pop("kind")
    spec = from_flat(ModelSpec, stored, what="saved student model")
    model = build_classifier(tuple(meta["input_shape"]), len(meta["classes"]), kind=spec.encoder,
                             feature_dim=spec.feature_dim, hidden=spec.hidden)
    weights = meta_path.parent / meta["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"weights file {weights} (named by {meta_path}) does not exist")
    try:
        state = torch.load(weights, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"weights file {weights} is not a readable model: {reason}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"weights file {weights} does not fit the model {meta_path} describes: "
                         f"{reason}") from None
    model.eval()
    return model, meta


def predict(meta_path: Path, x: np.ndarray) -> np.ndarray:
    """Class labels the saved student assigns to ``x``.

    Raises
    ------
    ValueError
        If ``x`` is empty, not real numbers, not of the shape ``(N, *input_shape)`` the model was
        trained on, or holds NaN/inf; and as :func:`load_student`.
    """
    model, meta = load_student(meta_path)
    x = np.asarray(x)
    if x.size == 0 or (x.ndim and len(x) == 0):
        raise ValueError(f"input holds no samples (shape {x.shape})")
    x = check_inputs(x, tuple(meta["input_shape"]), "input")
    classes = np.asarray(meta["classes"])
    return classes[predict_logits(model, x).argmax(axis=1)]


def _load_samples(path: Path) -> np.ndarray:
    """The ``.npy`` array at ``path`` (no pickles)."""
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"input file {path} is empty")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"input file {path} is not a .npy array: {str(err).splitlines()[0]}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m clients.pate.student predict --model M.json --input X.npy [--output Y.npy]``."""
    parser = argparse.ArgumentParser(prog="python -m clients.pate.student",
                                     description="Serve a saved flwr-privkit student model locally.")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="classify samples from a .npy file")
    pred.add_argument("--model", required=True, type=Path, help="student_model.json written by a run")
    pred.add_argument("--input", required=True, type=Path, help=".npy array of shape (N, *input_shape)")
    pred.add_argument("--output", type=Path,
                      help="write labels as .npy to this exact path, suffix or not (default: print them)")
    args = parser.parse_args(argv)
    try:
        if args.output is not None and not args.output.resolve().parent.is_dir():
            raise ValueError(f"output folder {args.output.resolve().parent} does not exist")
        labels = predict(args.model, _load_samples(args.input))
        if args.output is not None:
            with args.output.open("wb") as handle:  # the name as given: np.save(name) would append .npy
                np.save(handle, labels)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.output is None:
        print(" ".join(map(str, labels.tolist())))
    return 0
