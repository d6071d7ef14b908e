"""Credentials of a Flower deployment: a CA, the SuperLink's TLS certificate, one key pair per SuperNode.

- TLS: a self-signed CA and a SuperLink certificate signed by it whose subject alternative names are
  the addresses the SuperNodes and ``flwr`` dial (IP addresses and DNS names; a SuperNode refuses a
  certificate that does not name the address it connects to). The SuperLink gets ``ca.crt``,
  ``server.pem``, ``server.key``; every SuperNode and every ``flwr`` user gets ``ca.crt`` only.
- SuperNode authentication: an EC P-384 key pair per SuperNode in OpenSSH format, the format
  ``flower-supernode --auth-supernode-private-key`` reads and ``flwr supernode register`` takes (any
  NIST curve is accepted; P-384 is the one Flower's docs use). The private key stays at its site;
  the public key is registered at the SuperLink, which then refuses any SuperNode whose key it does
  not know.

Every private key is created owner-only (``os.open`` with mode ``0o600``): there is no moment when
the file exists with wider permissions. Usage, for a SuperLink at ``10.0.0.5`` and three sites::

    python -m simulations.deploy_credentials --out creds --host 10.0.0.5 --nodes site-a site-b site-c

Better still, each site makes its own key pair (``--keys-only``) and sends only the ``.pub`` file, so no
private key ever travels::

    python -m simulations.deploy_credentials --out mykeys --nodes site-a --keys-only
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
CERTIFICATE_DAYS = 30


def write_owner_only(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new file readable and writable by its owner only (mode 0o600 from creation).

    An existing file is removed first, so its old permissions cannot carry over.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _san(host: str) -> x509.GeneralName:
    """An IP-address SAN for an IP literal, else a DNS-name SAN."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c.isspace() or c in "/:" for c in host):
            raise ValueError(f"SuperLink host {host!r} is neither an IP address nor a DNS name") from None
        return x509.DNSName(host)


def make_certificates(directory: Path, hosts: Sequence[str] = LOOPBACK_HOSTS) -> dict[str, Path]:
    """A self-signed CA and a SuperLink certificate for ``hosts`` (its SANs), EC P-384, in ``directory``.

    Returns the paths ``ca`` (``ca.crt``), ``cert`` (``server.pem``) and ``key`` (``server.key``,
    owner-only). Raises ``ValueError`` if ``hosts`` is empty or names something that is no host.
    """
    if not hosts:
        raise ValueError("the SuperLink certificate needs at least one host (IP address or DNS name)")
    names = [_san(h) for h in hosts]
    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flwr-privkit deployment CA")])
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])

    def base(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS)))

    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, encipher_only=False, decipher_only=False)
    ca_cert = (base(ca_name, ca_key)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True,
                                            **usage), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_cert = (base(server_name, server_key)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                                **usage), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": directory / "ca.crt", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_owner_only(paths["key"], server_key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    return paths


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """One SuperNode's EC P-384 key pair in OpenSSH format: ``(name, owner-only; name.pub)``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"SuperNode name {name!r} must be a plain file name")
    key = ec.generate_private_key(ec.SECP384R1())
    private = write_owner_only(directory / name, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public = directory / f"{name}.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b"\n")
    return private, public


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the certificates and keys")
    parser.add_argument("--host", action="append", default=None,
                        help="an address the SuperLink is reached at (IP or DNS name; repeat for several); "
                             "default: 127.0.0.1 and localhost")
    parser.add_argument("--nodes", nargs="*", default=[], help="one name per SuperNode (key file names)")
    parser.add_argument("--keys-only", action="store_true", help="only SuperNode key pairs, no certificates")
    args = parser.parse_args(argv)
    if args.keys_only and not args.nodes:
        parser.error("--keys-only needs --nodes NAME [NAME ...]")
    for name in args.nodes:
        private, public = make_node_key(args.out / "keys", name)
        print(f"{name}: private key {private} (stays at the site), public key {public} (register it)")
    if not args.keys_only:
        certs = make_certificates(args.out / "certificates", args.host or LOOPBACK_HOSTS)
        print(f"SuperLink: {certs['cert']} + {certs['key']}; everyone: {certs['ca']}")


if __name__ == "__main__":
    main()
