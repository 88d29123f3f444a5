"""Throwaway X.509 material for TLS tests: a CA and a server certificate it signed.

Everything is written into a directory the caller owns (a pytest tmp_path); nothing is
cached, so every test run uses fresh keys.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class ServerPKI:
    ca_file: str          # PEM of the CA that signed the server certificate
    cert_file: str        # PEM server certificate (Xvnc -X509Cert)
    key_file: str         # PEM server key, unencrypted (Xvnc -X509Key)
    fingerprint: str      # SHA-256 of the server certificate's DER, lower-case hex


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256 keeps key generation instant; both GnuTLS and OpenSSL accept it everywhere.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vncmcp tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: str, data: bytes, mode: int = 0o644) -> str:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def make_ca(directory: str, label: str = "ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, str]:
    """A self-signed CA; returns (certificate, key, path of its PEM)."""
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(f"vncmcp test {label}"))
            .issuer_name(_name(f"vncmcp test {label}"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = _write(os.path.join(directory, f"{label}.pem"), cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_server_pki(directory: str, names: tuple[str, ...] | list[str] = ("localhost", "127.0.0.1", "::1")) -> ServerPKI:
    """A CA and a server certificate for `names` (host names or IP addresses), signed by it."""
    ca_cert, ca_key, ca_path = make_ca(directory, "ca")
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName([_alt_name(n) for n in names])
    cert = (x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path = _write(os.path.join(directory, "server.pem"), cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write(os.path.join(directory, "server.key"),
                      key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), mode=0o600)
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ServerPKI(ca_file=ca_path, cert_file=cert_path, key_file=key_path, fingerprint=fingerprint)
