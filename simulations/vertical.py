"""Hydra entry point of the vertical prototype exchange: ``python -m simulations.vertical``.

Composes :class:`protocol.vertical.VerticalConfig` from ``conf/vertical`` (groups ``dataset``,
``model``, ``strategy``), runs it on Flower's simulation engine (one simulated SuperNode per party),
prints live per-epoch progress and a summary table, and writes ``results.json`` plus every party's model
to the run directory. Examples::

    python -m simulations.vertical
    python -m simulations.vertical dataset=mnist5k strategy.lam=0.5
    python -m simulations.vertical dataset=mnist5k_quarters model=cnn strategy=proto_private
    python -m simulations.vertical dataset.data_dir=DIR  # every DIR/party{k}.{npz,csv}: n_parties from DIR
    python -m simulations.vertical -m dataset.aligned_fraction=0.05,0.1 strategy=proto,vfl_head_fusion

A refused setting or party file is one ``error:`` line and exit status 2 (``verbose=true``: the traceback).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
from flwr.clientapp import ClientApp
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from clients.vertical.handlers import party_data
from clients.vertical.party_files import check_party_count, party_files
from protocol.vertical import VerticalConfig
from simulations.app import build_client_app
from simulations.flower_sim import run_flower_simulation
from simulations.hydra_errors import check_command_line, unknown_settings
from simulations.results import vertical_run_record, write_results
from simulations.vertical_config import register_configs
from simulations.vertical_preflight import check_parties
from strategies.vertical_flower import run_vertical

console = Console()

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "vertical"
"""The Hydra config folder of ``python -m simulations.vertical``."""


ABSENT = "–"
"""How the console shows a metric that does not apply to the run (``null`` in ``results.json``)."""


def fmt(value: float | None, spec: str = ".4f") -> str:
    """``value`` formatted by ``spec``; :data:`ABSENT` for ``None`` (a metric the run has not)."""
    return ABSENT if value is None else format(value, spec)


def print_epoch(epoch: int, metrics: dict[str, float | None]) -> None:
    """Live progress: one line per epoch."""
    parts = [f"{k}={fmt(v, '.4g')}" for k, v in metrics.items() if k != "epoch"]
    console.print(f"[bold]epoch {epoch + 1}[/bold]  " + "  ".join(parts))


def run_vertical_simulation(
    cfg: VerticalConfig, *, verbose: bool = False, client_app: ClientApp | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Run ``cfg`` on Flower's simulation engine (one node per party); return the results dict.

    ``verbose`` prints a line per epoch; ``cfg.verbose`` keeps Flower's and Ray's logs, and ``quiet``
    (without it) hides Flower's logs of a node's exception too, for a caller that reports the error.
    ``client_app`` defaults to :func:`simulations.app.build_client_app` (2048-bit PSI keys only).
    """
    return run_flower_simulation(
        lambda grid, _context: run_vertical(grid, cfg, on_epoch=print_epoch if verbose else None),
        client_app or build_client_app(output_dir=cfg.output_dir or None), cfg.dataset.n_parties,
        verbose=cfg.verbose, quiet=quiet,
    )


def read_party_files(cfg: VerticalConfig) -> list[str]:
    """Read every party's file of ``cfg``'s data folder here, before any node starts, so that a file the
    nodes would refuse stops the run at once with its own message; return the reading warnings.

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`clients.vertical.handlers.party_data` (naming the file and, for a bad cell, the row).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(cfg.dataset.n_parties):
            party_data(cfg, k)
    return list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))


def summary_table(cfg: VerticalConfig, results: dict[str, Any]) -> Table:
    """Accuracy by kind of user, attack accuracy and ε of one run."""
    source = (f"party files in {cfg.dataset.data_dir}" if cfg.dataset.data_dir
              else f"{cfg.dataset.name}, aligned fraction {cfg.dataset.aligned_fraction}")
    table = Table(title=f"vertical {source}, {cfg.dataset.n_parties} parties")
    for column in ("split", "aligned users", "active-only", "passive-only", "attack exact", "attack nearest",
                   "label-DP ε"):
        table.add_column(column, justify="right")
    attack = results.get("attack", {})
    eps = results["label_dp_epsilon"]
    for split in ("val", "test"):
        r = results[split]
        passive = [v for k, v in r.items() if k.startswith("passive_only") and v is not None]
        table.add_row(split, fmt(r["aligned"]), fmt(r.get("active_only")),
                      fmt(sum(passive) / len(passive) if passive else None),
                      fmt(attack.get("exact"), ".3f"), fmt(attack.get("nearest"), ".3f"),  # prototype attacks
                      "∞" if math.isinf(eps) else f"{eps:.3g}")
    return table


def use_party_folder(cfg: VerticalConfig, *, n_parties_given: bool) -> list[Path]:
    """Point ``cfg`` at its data folder's party files, all of them; return the files in party order.

    ``dataset.data_dir`` becomes absolute (the nodes read it wherever they run). The folder decides the
    number of parties: ``dataset.n_parties`` is set from it unless the command line gave it
    (``n_parties_given``), and a given value that disagrees is refused, so a folder of three party files
    never runs as two parties (the schema's default 2 describes the bundled split, not the user's files).

    Raises
    ------
    ValueError
        If the folder holds no party files, a gap or a doubled party, or another number of party files
        than a given ``dataset.n_parties`` (the message names the files and the setting).
    """
    folder = Path(cfg.dataset.data_dir).resolve()
    cfg.dataset.data_dir = str(folder)
    if not n_parties_given:
        cfg.dataset.n_parties = len(party_files(folder))
    files = check_party_count(folder, cfg.dataset.n_parties)
    cfg.validate()
    return files


def _given_on_command_line(key: str) -> bool:
    """Whether Hydra's command-line overrides of this run set ``key`` (``key=…``, ``+key=…``, ``++key=…``)."""
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in HydraConfig.get().overrides.task)


POPULATIONS = {"aligned": "aligned users", "active_only": "active-only users"}
"""Row labels of the per-class table (``passive_only_k``: ``passive-only users (party k)``)."""


def per_class_table(results: dict[str, Any], split: str = "test") -> Table | None:
    """Recall of every class for each population of ``split`` that has a predictor, with each row's
    predicted-class counts (a head that predicts one class for everyone shows as one full column);
    ``None`` if the results carry no per-class view."""
    views = results.get("per_class", {}).get(split)
    if not views or all(v is None for v in views.values()):
        return None
    n_classes = len(next(v for v in views.values() if v is not None)["recall"])
    names = results.get("data", {}).get("classes") or [f"class {c}" for c in range(n_classes)]
    table = Table(title=f"per-class recall, {split} users (predicted count in brackets)")
    table.add_column("population")
    for name in names:
        table.add_column(str(name), justify="right")
    for population, view in views.items():
        if view is None:
            continue
        label = POPULATIONS.get(population, f"passive-only users (party {population.rsplit('_', 1)[-1]})")
        predicted = [sum(row[c] for row in view["confusion"]) for c in range(n_classes)]
        cells = [f"{fmt(r, '.2f')} ({n})" for r, n in zip(view["recall"], predicted, strict=True)]
        table.add_row(label, *cells)
    return table


@hydra.main(version_base="1.3", config_path="../conf/vertical", config_name="config")
def main(dict_cfg: DictConfig) -> None:
    """Compose the config, run the simulation, print the summary, write ``results.json``.

    A refusal (a setting out of range or unknown, a data folder or party file the run cannot use, an
    encoder that does not fit a party's features, parties without a training user in common or with
    different held-out users: :mod:`simulations.vertical_preflight`) stops before Ray starts:
    ``error: <message>`` on stderr, exit status 2. A run that fails later (a node's error, a party that
    vanished) ends with its cause on one ``error:`` line, exit status 1. ``verbose=true``
    re-raises either with its traceback and keeps Flower's and Ray's logs.
    """
    unknown = unknown_settings(dict_cfg, VerticalConfig)
    if unknown:  # `+key=value` adds keys the schema does not have: they would be ignored silently
        _stop(ValueError(unknown), 2, hint=False)
    try:
        cfg: VerticalConfig = OmegaConf.to_object(dict_cfg)  # type: ignore[assignment]  # validated here
    except (ValueError, OmegaConfBaseException) as err:
        cause = err.__cause__ if isinstance(err, OmegaConfBaseException) and err.__cause__ else err
        _stop(cause, 2, hint=False)
    try:
        output_dir = Path(cfg.output_dir or HydraConfig.get().runtime.output_dir)
        cfg.output_dir = str(output_dir)
        if cfg.dataset.data_dir:  # the nodes read DIR/party{k}.{npz,csv}, wherever they run
            use_party_folder(cfg, n_parties_given=_given_on_command_line("dataset.n_parties"))
            for warning in read_party_files(cfg):
                print(f"warning: {warning}", file=sys.stderr)
        check_parties(cfg, [party_data(cfg, k) for k in range(cfg.dataset.n_parties)])
        results = run_vertical_simulation(cfg, verbose=True, quiet=True)
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError) as err:
        if cfg.verbose:
            raise
        _stop(err, 2 if isinstance(err, ValueError | FileNotFoundError) else 1, hint=True)
    console.print(summary_table(cfg, results))
    if (by_class := per_class_table(results)) is not None:
        console.print(by_class)
    out = write_results(output_dir, vertical_run_record(cfg, results))
    console.print(f"results written to {out}")


def _stop(err: BaseException, status: int, *, hint: bool) -> NoReturn:
    """Print ``err``'s first line as ``error: …`` on stderr and exit with ``status``."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    print(f"error: {lines[0]}" + (" (verbose=true shows the traceback)" if hint else ""), file=sys.stderr)
    sys.exit(status)


register_configs()

def cli(argv: Sequence[str] | None = None) -> None:
    """``python -m simulations.vertical [overrides]``: a command line that does not compose (a config-group
    choice that does not exist, a misspelt key, a value of the wrong type) is one ``error:`` line and exit
    status 2 before anything runs (:func:`simulations.hydra_errors.check_command_line`); else :func:`main`
    runs it. ``argv`` (default: ``sys.argv[1:]``) given replaces ``sys.argv``'s arguments for Hydra."""
    check_command_line(CONF_DIR, VerticalConfig, sys.argv[1:] if argv is None else argv, "verbose")
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    main()


if __name__ == "__main__":
    cli()
