"""Credentials made from scratch for the security tests: NKeys, NATS JWTs (v2) and creds files, a CA with server
and client certificates, and nats-server configuration files.

Nothing here needs a tool outside the venv: keys come from the ``nkeys`` package, JWTs are assembled as the NATS JWT
v2 format defines them (``header.claims.signature``, base64url without padding, signed ed25519 by the issuer's
nkey), and certificates come from ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
SECURITY_DOC = REPO / "docs" / "security.md"

# NKeys and JWTs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One NKey: ``seed`` (secret, ``S…``) and ``public`` (``O…`` operator, ``A…`` account, ``U…`` user)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        kp = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            return bytes(kp.sign(data))
        finally:
            kp.wipe()


def new_key(prefix: int) -> Key:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(bytearray(seed))
    public = kp.public_key.decode()
    kp.wipe()
    return Key(seed.decode(), public)


def operator_key() -> Key:
    return new_key(nkeys.PREFIX_BYTE_OPERATOR)


def account_key() -> Key:
    return new_key(nkeys.PREFIX_BYTE_ACCOUNT)


def user_key() -> Key:
    return new_key(nkeys.PREFIX_BYTE_USER)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(subject: str, name: str, nats: dict[str, Any], issuer: Key) -> str:
    """A NATS v2 JWT for ``subject``, signed by ``issuer`` (the operator for accounts, the account for users)."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject,
                              "nats": {**nats, "version": 2}}
    # jti: a hash of the claims without it (the server only needs it to be unique).
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
             "leaf": -1}
JETSTREAM_UNLIMITED = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class Operator:
    """Operator mode: an operator, its system account and one application account with JetStream."""

    operator: Key
    system: Key
    account: Key
    operator_jwt: str
    system_jwt: str
    account_jwt: str

    @classmethod
    def create(cls) -> Operator:
        op, sys_acc, acc = operator_key(), account_key(), account_key()
        op_jwt = encode_jwt(op.public, "jetbridge-test-operator",
                            {"type": "operator", "system_account": sys_acc.public}, op)
        sys_jwt = encode_jwt(sys_acc.public, "SYS", {"type": "account", "limits": UNLIMITED}, op)
        acc_jwt = encode_jwt(acc.public, "APP", {"type": "account", "limits": {**UNLIMITED, **JETSTREAM_UNLIMITED},
                                                 "default_permissions": {"pub": {}, "sub": {}}}, op)
        return cls(op, sys_acc, acc, op_jwt, sys_jwt, acc_jwt)

    def user(self, name: str, permissions: dict[str, Any] | None = None) -> tuple[Key, str]:
        """A user of the application account and its JWT (``permissions``: ``{"pub": {"allow": [...]}, ...}``)."""
        key = user_key()
        claims = {"type": "user", "subs": -1, "data": -1, "payload": -1, "pub": {}, "sub": {}, **(permissions or {})}
        return key, encode_jwt(key.public, name, claims, self.account)

    def server_config(self) -> str:
        return (f"operator: {self.operator_jwt}\n"
                f"system_account: {self.system.public}\n"
                "resolver: MEMORY\n"
                f"resolver_preload: {{\n  {self.system.public}: {self.system_jwt}\n"
                f"  {self.account.public}: {self.account_jwt}\n}}\n")


def creds_text(user_jwt: str, seed: str) -> str:
    """A creds file as ``nsc generate creds`` writes it."""
    return (f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


# TLS ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of a CA, a server certificate (localhost, 127.0.0.1) and a client certificate, all PEM."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: a second CA nobody's certificate is signed by (a client trusting it must refuse the server)
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, *, server: bool,
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("jetbridge test CA")
    _, other = _ca("some other CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, "jetbridge-client", server=False)
    pem = serialization.Encoding.PEM
    files = Pki(ca=directory / "ca.pem", server_cert=directory / "server.pem", server_key=directory / "server-key.pem",
                client_cert=directory / "client.pem", client_key=directory / "client-key.pem",
                other_ca=directory / "other-ca.pem")
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.other_ca.write_bytes(other.public_bytes(pem))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    files.client_cert.write_bytes(client_cert.public_bytes(pem))
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    return files


# Permission sets from docs/security.md ---------------------------------------------------------------------------


def documented_blocks() -> dict[str, str]:
    """The nats-server config blocks of docs/security.md, by the name in their ``<!-- conf:NAME -->`` marker.

    The least-privilege tests run the servers with these very blocks, so the documentation is what is tested.
    """
    text = SECURITY_DOC.read_text()
    found = dict(re.findall(r"<!-- conf:([\w-]+) -->\s*```[a-z]*\n(.*?)```", text, flags=re.S))
    return found


def quote(value: str) -> str:
    """A string as a nats-server config value."""
    return json.dumps(value)
