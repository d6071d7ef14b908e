"""The party side of the vertical prototype exchange: what each party computes and its Flower handlers.

:class:`~clients.vertical.active_party.ActiveParty` (label holder: encoder, top model, local head) and
:class:`~clients.vertical.passive_party.PassiveParty` (encoder), on the shared
:class:`clients.vertical.party_base.Party` (plain torch; no Flower), expose the protocol as named
operations, ``party.handle(op, payload) -> reply`` with payloads of numpy arrays and scalars
(:func:`clients.vertical.parties.make_party` builds either). The Flower ClientApp handlers
(:mod:`clients.vertical.handlers`) and the in-process link used by the benchmark call exactly these
operations, so both run the same method. A party's whole state round-trips through ``state_bytes`` /
``from_state`` so a Flower node can keep it in ``context.state`` between messages.

One epoch (driven by :mod:`strategies.vertical_prototype`):

1. aligned minibatches (split learning, Vepakomma et al. 2018), ``steps_per_exchange`` per exchange:
   passive ``step`` returns features of the minibatches (and applies the gradients of the previous
   exchange); active ``step`` trains encoder + top model with cross-entropy and returns each passive party
   the gradients w.r.t. its features;
2. prototypes (the patent's method, :mod:`clients.vertical.prototypes`): passive ``snapshot`` sends the
   features of all aligned users; active ``prototypes`` computes its own class prototypes (EMA-smoothed)
   and, for each passive party, prototypes in that party's space (clipped / noised per
   :mod:`clients.vertical.prototype_privacy`); passive ``receive`` smooths them (EMA, post-processing);
3. ``local``: the active party trains its encoder + local head on all its labelled rows plus
   ``lam`` × first loss on its non-aligned rows. A passive party's third loss (``lam_passive`` × pull of
   non-aligned rows towards confident nearest-prototype pseudo-labels) rides along with each of its
   split-learning steps in (1), one random non-aligned minibatch per step.

Modules
-------
- the parties: :mod:`~clients.vertical.party_base`, :mod:`~clients.vertical.active_party`,
  :mod:`~clients.vertical.passive_party`, :mod:`~clients.vertical.parties` (one by role);
- what they compute with: :mod:`~clients.vertical.prototypes`, :mod:`~clients.vertical.prototype_privacy`,
  :mod:`~clients.vertical.label_protection`, :mod:`~clients.vertical.gradient_protection`,
  :mod:`~clients.vertical.fusion`;
- the attack measurements: :mod:`~clients.vertical.label_attacks`, :mod:`~clients.vertical.gradient_attacks`,
  :mod:`~clients.vertical.embedding_attacks`;
- their data: :mod:`~clients.vertical.data` (splits with per-party IDs), :mod:`~clients.vertical.party_files`
  (``.npz``), :mod:`~clients.vertical.party_csv` (CSV and its feature transform),
  :mod:`~clients.vertical.csv_example`;
- at a node: :mod:`~clients.vertical.handlers` (Flower handlers; alignment through :mod:`clients.psi`)
  and :mod:`~clients.vertical.predict` (a saved party model's predictions,
  ``python -m clients.vertical.predict``).
"""
