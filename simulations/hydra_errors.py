"""One ``error:`` line for a Hydra command line that does not compose (issue 24 §6).

Hydra reports a config-group choice that does not exist, a misspelt key or a value of the wrong type with
its own generic text (several lines, exit status 1). :func:`check_command_line` composes the config the
command line asks for before Hydra runs it and, if that fails, prints one line naming the override, what
is wrong with it and what would be valid — the group's choices (the files of its folder), the close
valid keys, the setting's type — and exits with status 2. With the entry point's verbose setting on the
command line it re-raises Hydra's exception instead (the traceback). A sweep (``-m``) is checked value by
value. A setting by an earlier name (the schema's ``renamed_keys``: ``strategy.sigma``, now
``strategy.sigma2``) is refused before composing, naming the new key (Hydra would only say there is no
such key). Keys the schema has not, added with ``+key=value``, compose: the entry point's ``main`` refuses
them (:func:`unknown_settings`), and settings that break a rule of the schema, also on one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from protocol.codec import renamed_key

TRUE = ("true", "yes", "on", "1")
MULTIRUN = ("-m", "--multirun")


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted setting of the dataclass ``schema``, nested dataclasses included (``strategy.sigma2``)."""
    keys: list[str] = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, kind = f"{prefix}{f.name}", hints[f.name]
        keys.append(key)
        if dataclasses.is_dataclass(kind):
            keys.extend(schema_keys(kind, f"{key}."))  # type: ignore[arg-type]
    return keys


def setting_type(schema: type, key: str) -> str | None:
    """The type of the dotted setting ``key`` of ``schema`` as written in the schema, or None."""
    kind: object = schema
    for part in key.split("."):
        if not dataclasses.is_dataclass(kind):
            return None
        kind = typing.get_type_hints(kind).get(part)  # type: ignore[arg-type]
        if kind is None:
            return None
    return getattr(kind, "__name__", None) or str(kind)


def unknown_settings(cfg: DictConfig, schema: type) -> str | None:
    """The keys of the composed ``cfg`` that ``schema`` has not (added with ``+key=value``, which Hydra
    accepts and the schema would ignore) on one line, with the valid keys beside the first; or None."""
    known = schema_keys(schema)

    def extra(node: dict, prefix: str) -> list[str]:
        found = []
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted not in known:
                found.append(dotted)
            elif isinstance(value, dict) and any(k.startswith(f"{dotted}.") for k in known):
                found.extend(extra(value, f"{dotted}."))
        return found

    unknown = extra(OmegaConf.to_container(cfg, resolve=False), "")  # type: ignore[arg-type]
    if not unknown:
        return None
    parent = unknown[0].rpartition(".")[0]
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
    return (f"unknown setting(s) {', '.join(unknown)}; the {parent or 'top-level'} settings are "
            f"{', '.join(siblings)}")


def group_choices(conf_dir: Path, group: str) -> list[str]:
    """The choices of config group ``group``: the ``.yaml`` files of ``conf_dir/group``."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def close_keys(schema: type, conf_dir: Path, key: str) -> str:
    """The settings (and config groups) whose names are close to ``key``, or the valid ones beside it."""
    groups = [p.name for p in conf_dir.iterdir() if p.is_dir()]
    known = sorted(set(schema_keys(schema) + groups))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if close:
        return f"did you mean {', '.join(close)}?"
    parent = key.rpartition(".")[0]
    while parent and parent not in known:
        parent = parent.rpartition(".")[0]
    siblings = [k for k in known if k.rpartition(".")[0] == parent]
    where = f"of {parent}" if parent else "at the top level"
    return f"the settings {where} are {', '.join(siblings)}"


def explain(err: Exception, override: str, schema: type, conf_dir: Path) -> str:
    """One line: ``override`` (the first one that does not compose), what is wrong and what is valid."""
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else None
    key, _, value = override.lstrip("+~").partition("=")
    first = (str(cause or err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, MissingConfigException) and (conf_dir / key).is_dir():
        choices = group_choices(conf_dir, key)
        return (f"{override}: there is no {key} {value!r}; the choices are {', '.join(choices)} "
                f"(the files in {conf_dir.parent.name}/{conf_dir.name}/{key}/)")
    if isinstance(cause, ConfigKeyError | ConfigAttributeError):
        return f"{override}: there is no setting {key!r}; {close_keys(schema, conf_dir, key)}"
    if isinstance(cause, ValidationError):
        kind = setting_type(schema, key)
        return f"{override}: {key} must be of type {kind}, got {value!r}" if kind else f"{override}: {first}"
    return f"{override}: {first}"


def concrete_runs(overrides: Sequence[str], multirun: bool) -> list[list[str]]:
    """Override lists without sweeps that together try every value of every sweep of ``overrides``
    (each sweep at its first value, then each other value in turn); ``overrides`` alone without ``-m``."""
    if not multirun:
        return [list(overrides)]
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    values = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
              else [o.input_line] for o in parsed]
    base = [v[0] for v in values]
    runs = [base]
    for i, options in enumerate(values):
        runs.extend([*base[:i], other, *base[i + 1:]] for other in options[1:])
    return runs


def compose_error(overrides: list[str], conf_dir: Path) -> Exception | None:
    """The exception of composing ``conf_dir/config.yaml`` with ``overrides``, or None."""
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        return err
    return None


def first_failure(overrides: list[str], conf_dir: Path) -> tuple[Exception, str] | None:
    """The exception of composing ``overrides`` and the first override that raises it, or None."""
    if compose_error(overrides, conf_dir) is None:
        return None
    for end in range(1, len(overrides) + 1):
        err = compose_error(overrides[:end], conf_dir)
        if err is not None:
            return err, overrides[end - 1]
    return None  # only the whole list fails: left to Hydra


def check_command_line(conf_dir: Path, schema: type, argv: Sequence[str], verbose_key: str) -> None:
    """Compose what the Hydra command line ``argv`` asks for; if it does not compose, print one
    ``error:`` line (:func:`explain`) and exit with status 2 — or, with ``verbose_key=true`` among the
    overrides, raise Hydra's exception. A command line with a flag other than ``-m``/``--multirun``
    (help, ``--cfg``, another config folder, ...) and ``hydra.*`` overrides are left to Hydra."""
    if any(a.startswith("-") and a not in MULTIRUN for a in argv):
        return
    overrides = [a for a in argv if a not in MULTIRUN and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    for override in overrides:  # an earlier name: Hydra would say only that there is no such setting
        key, _, value = override.lstrip("+~").partition("=")
        refusal = renamed_key(schema, key, value)
        if refusal is not None:
            print(f"error: {refusal}", file=sys.stderr)
            sys.exit(2)
    verbose = any(o.lstrip("+").lower() in {f"{verbose_key}={t}" for t in TRUE} for o in overrides)
    try:
        runs = concrete_runs(overrides, any(a in MULTIRUN for a in argv))
    except HydraException as err:  # an override that does not parse
        failure: tuple[Exception, str] | None = (err, getattr(err, "override", None) or " ".join(overrides))
    else:
        failure = next((f for f in (first_failure(run, conf_dir) for run in runs) if f), None)
    if failure is None:
        return
    err, override = failure
    if verbose:
        raise err
    print(f"error: {explain(err, override, schema, conf_dir)}", file=sys.stderr)
    sys.exit(2)
