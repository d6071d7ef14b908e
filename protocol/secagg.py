"""What secure vote aggregation says on the wire: message types, record keys, fixed-point encoding, masks.

The protocol is [BIK+17] (Bonawitz et al., CCS 2017, Figure 4) for honest-but-curious parties, run
over the Flower Message API with the server relaying everything (``protocol.secagg_crypto`` holds the
primitives). One message per teacher node per step, a whole query batch at once:

1. ``query.secagg_keys`` — each node makes its long-term encryption key pair ``c`` and the mask key
   pair ``s`` of the first step; replies both public keys.
2. ``query.secagg_shares`` — the server relays every node's public keys; each node Shamir-shares the
   private mask key of the first step among all nodes (threshold t) and replies the shares encrypted
   for each receiver.
3. ``query.secagg_masked`` (per aggregation step r) — the server sends the queries, the node's noise
   standard deviation and the step's participants with their mask public keys. A node noises its
   votes, encodes them in fixed point (:func:`encode`), adds the pairwise masks and a fresh self-mask
   ``b`` and replies the masked vector ``y`` in Z_{2^64}, encrypted shares of ``b``, and the public key
   (plus encrypted shares) of a *fresh* mask key pair for step r+1 — pairwise keys are never reused
   across steps, so recovering a dropped node's key of step r opens no other step.
4. ``query.secagg_unmask`` — the server names the survivors (whose ``y`` arrived and verified) and the
   dropped; each node returns its shares of ``b`` for survivors and of the step's mask key for dropped
   nodes, never both for one node. The server reconstructs, removes the masks and decodes the sum.

Fixed point: a vote count plus its Gaussian noise share is encoded as ``round(SCALE · v)`` in two's
complement modulo 2^64. Counts are integers, so ``round(SCALE · (n + z)) = SCALE · n + round(SCALE · z)``:
the rounding touches the noise only, and its effect on the analysis is bounded in
``strategies.distributed_noise``. Each party's value is refused above :func:`party_bound`, so the sum of
all parties (the nodes and the server's top-up) can never wrap around the ring.
"""

from __future__ import annotations

import numpy as np

from protocol.secagg_crypto import RING_BITS, derive, prg_words

MSG_SECAGG_KEYS = "query.secagg_keys"
MSG_SECAGG_SHARES = "query.secagg_shares"
MSG_SECAGG_MASKED = "query.secagg_masked"
MSG_SECAGG_UNMASK = "query.secagg_unmask"

SECAGG = "secagg"  # ConfigRecord of every secagg message: session, step, nonce, participants, ...
PEERS = "secagg_peers"  # ConfigRecord: the peers' public keys (c_pk.<node>, s_pk.<node>)
SHARES = "secagg_shares"  # ConfigRecord: encrypted shares relayed to one node (b.<node>, s.<node>)
MASKED = "secagg_masked"  # ArrayRecord of a masked reply: "y", uint64 (Q, C)

SCALE_BITS = 16
SCALE = 2**SCALE_BITS
"""Fixed-point resolution: 2^-16 of a vote."""


def party_bound(n_parties: int) -> int:
    """Largest ``|encoded value|`` one party may contribute so that ``n_parties`` values cannot wrap.

    ``n_parties · bound <= 2^63 - 1``: the signed sum stays in int64, decoded exactly modulo 2^64.
    """
    if n_parties < 1:
        raise ValueError(f"n_parties must be >= 1, got {n_parties}")
    return (2 ** (RING_BITS - 1) - 1) // n_parties


def encode(values: np.ndarray, n_parties: int) -> np.ndarray:
    """``round(SCALE · values)`` as two's-complement ``uint64`` (the ring Z_{2^64}).

    Raises
    ------
    ValueError
        If a value is not finite or its encoding exceeds :func:`party_bound` (the sum could wrap).
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("values to encode must be finite")
    bound = party_bound(n_parties)
    scaled = np.rint(values * SCALE)
    if np.abs(scaled).max(initial=0.0) > bound:
        raise ValueError(f"an encoded value {np.abs(scaled).max():.4g} exceeds the per-party bound {bound} "
                         f"of {n_parties} parties: the masked sum could overflow Z_2^{RING_BITS}")
    return scaled.astype(np.int64).view(np.uint64)


def decode(total: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode` for a sum of encoded values: two's complement, divided by ``SCALE``."""
    return np.asarray(total, dtype=np.uint64).view(np.int64).astype(np.float64) / SCALE


def step_label(session: bytes, step: int) -> bytes:
    """The label every key and mask of aggregation step ``step`` of ``session`` is derived under."""
    return session + b"|step|" + str(int(step)).encode()


def pair_mask(pair_secret: bytes, label: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The pairwise mask ``PRG(s_{u,v})`` of one step ([BIK+17] Figure 4, round 2), shaped ``shape``."""
    seed = derive(pair_secret, b"flwr-privkit secagg pairwise mask|" + label)
    return prg_words(seed, int(np.prod(shape))).reshape(shape)


def self_mask(seed: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The self-mask ``PRG(b_u)`` of one step, shaped ``shape`` (``b_u`` is fresh per step)."""
    return prg_words(seed, int(np.prod(shape))).reshape(shape)


def mask_sign(me: int, peer: int) -> int:
    """+1 if ``me`` adds the pairwise mask shared with ``peer``, -1 if it subtracts it (u < v adds)."""
    if me == peer:
        raise ValueError(f"a node shares no pairwise mask with itself (node {me})")
    return 1 if me < peer else -1


def pair_info(session: bytes, step: int) -> bytes:
    """HKDF ``info`` of the pairwise key agreement of a step (its own key pair ``s`` per step)."""
    return b"flwr-privkit secagg pair|" + step_label(session, step)


def share_aad(session: bytes, what: str, step: int, sender: int, receiver: int) -> bytes:
    """Associated data of an encrypted share: what it is, of which step, from whom, for whom."""
    fields = [what, str(step), str(sender), str(receiver)]
    return b"|".join([session, *(f.encode() for f in fields)])


def cipher_info(session: bytes) -> bytes:
    """HKDF ``info`` of the node-to-node share-encryption keys (long-term pair ``c``)."""
    return b"flwr-privkit secagg share cipher|" + session


def mac_info(session: bytes) -> bytes:
    """HKDF ``info`` of the key a node tags its replies with (agreed with the server's session key)."""
    return b"flwr-privkit secagg reply tag|" + session
