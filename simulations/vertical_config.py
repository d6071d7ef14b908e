"""Hydra's view of the vertical configuration: the typed schema registered in the ConfigStore.

The schema itself (:class:`protocol.vertical.VerticalConfig`) lives on the ground floor, because the
server and every party decode it; this module only tells Hydra about it. ``conf/vertical/config.yaml``
lists ``vertical_schema`` first in its defaults, so every group file and override is type-checked
against the schema, and the group YAMLs hold only what differs from its defaults.
"""

from __future__ import annotations

from protocol.vertical import VerticalConfig

SCHEMA_NAME = "vertical_schema"


def register_configs() -> None:
    """Register :class:`protocol.vertical.VerticalConfig` as ``vertical_schema`` in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=VerticalConfig)
