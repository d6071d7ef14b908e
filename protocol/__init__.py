"""The ground floor: what crosses the wire between the server and the parties.

Message types, roles, record keys, the typed specs and configs a ClientApp decodes, and the one codec
between dataclasses, dotted ``run_config`` scalars and Flower ``ConfigRecord``. Only ``flwr.app``
records and numpy: no torch, no Hydra. ``clients/`` and ``strategies/`` import this package and never
each other; ``simulations/`` sits on top of all three.
"""
