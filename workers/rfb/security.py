"""The security handshake (RFC 6143 section 7.2, VeNCrypt, Apple Remote Desktop).

`negotiate()` picks a type both sides support, authenticates, and reads the
SecurityResult. Credentials never appear in an exception message.
"""
from __future__ import annotations

import hashlib
import os
import ssl
import struct
from dataclasses import dataclass, field

from . import constants as C
from .errors import AuthFailed, ProtocolError, SecurityError
from .stream import Stream

MAX_REASON = 4096  # a failure reason longer than this is truncated, not read into memory whole


@dataclass
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass
class TLSOptions:
    """How to check an X509 server. Anonymous TLS (TLSNone/TLSVnc/TLSPlain) checks nothing."""
    ca_file: str | None = None
    fingerprint: str | None = None  # SHA-256 of the server certificate (DER), hex, ':' allowed
    verify_hostname: bool = True


@dataclass
class SecurityOutcome:
    offered: list[str]
    used: str


def _des_encrypt(key8: bytes, block: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    # TripleDES with K1 = K2 = K3 is single DES.
    encryptor = Cipher(TripleDES(key8 * 3), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """VNC authentication: DES of the challenge, keyed by the password with each byte's bits mirrored."""
    key = password.encode("latin-1", "replace")[:8].ljust(8, b"\0")
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in key)
    return _des_encrypt(key, challenge[:8]) + _des_encrypt(key, challenge[8:16])


def _aes128_ecb(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def ard_response(generator: int, prime: bytes, server_public: bytes, username: str, password: str) -> bytes:
    """Apple Remote Desktop: Diffie-Hellman, MD5 of the shared secret keys AES-128-ECB
    over 64 bytes of user name and 64 bytes of password (each NUL-terminated, random-padded)."""
    key_len = len(prime)
    p = int.from_bytes(prime, "big")
    if p < 3 or not 1 < generator < p:
        raise ProtocolError("server sent invalid Diffie-Hellman parameters for Apple Remote Desktop")
    private = int.from_bytes(os.urandom(key_len), "big") % (p - 2) + 1
    public = pow(generator, private, p).to_bytes(key_len, "big")
    shared = pow(int.from_bytes(server_public, "big"), private, p).to_bytes(key_len, "big")
    aes_key = hashlib.md5(shared).digest()

    def field64(text: str) -> bytes:
        raw = text.encode("utf-8")[:63] + b"\0"
        return raw + os.urandom(64 - len(raw))

    credentials = field64(username) + field64(password)
    return _aes128_ecb(aes_key, credentials) + public


def _anonymous_tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Anonymous Diffie-Hellman exists only up to TLS 1.2 and only at security level 0.
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.set_ciphers("aNULL:!eNULL:@SECLEVEL=0")
    except ssl.SSLError:
        # Some OpenSSL builds (or system crypto policies) remove anonymous suites entirely.
        raise SecurityError("this Python's OpenSSL offers no anonymous TLS cipher suites, so the "
                            "server's anonymous TLS VeNCrypt types cannot be used") from None
    return ctx


def _x509_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.fingerprint:
        normalise_fingerprint(tls.fingerprint)  # refuse a malformed pin before the handshake
        # Pinned certificate: chain and name are not checked, the fingerprint is (after the handshake).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = tls.verify_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise SecurityError(f"cannot load TLS CA file {tls.ca_file}: {e}") from None
    return ctx


def normalise_fingerprint(text: str) -> str:
    """Lower-case hex without separators; accepts what `openssl x509 -fingerprint -sha256` prints."""
    hexdigits = "".join(text.split()).replace(":", "").lower()
    if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise SecurityError("tls_fingerprint must be the certificate's SHA-256: 64 hex digits, "
                            "':' separators allowed")
    return hexdigits


async def _read_reason(stream: Stream) -> str:
    """The server's reason string. Only its first MAX_REASON bytes are read: the session
    ends right after it, so the rest is never consumed."""
    length = await stream.u32()
    text = (await stream.read(min(length, MAX_REASON))).decode("utf-8", "replace")
    if length > MAX_REASON:
        text += f"... (truncated: server sent a reason of {length} bytes, limit {MAX_REASON})"
    return text


async def _security_result(stream: Stream, minor: int, what: str, secret: str | None = None) -> None:
    result = await stream.u32()
    if result == 0:
        return
    reason = await _read_reason(stream) if minor >= 8 else ""
    if secret:  # a server that can decrypt the password (ARD, Plain) may echo it back
        reason = reason.replace(secret, "***")
    raise AuthFailed(f"{what} authentication failed" + (f": {reason}" if reason else ""))


def _client_preference(creds: Credentials) -> list[int]:
    if creds.password is None and not creds.username:
        return [C.SEC_NONE, C.SEC_VENCRYPT, C.SEC_VNC_AUTH, C.SEC_ARD]
    if creds.username:
        return [C.SEC_VENCRYPT, C.SEC_ARD, C.SEC_VNC_AUTH, C.SEC_NONE]
    return [C.SEC_VENCRYPT, C.SEC_VNC_AUTH, C.SEC_ARD, C.SEC_NONE]


def _vencrypt_preference(creds: Credentials, tls: TLSOptions) -> list[int]:
    x509 = [C.VENCRYPT_X509_PLAIN, C.VENCRYPT_X509_VNC, C.VENCRYPT_X509_NONE]
    anon = [C.VENCRYPT_TLS_PLAIN, C.VENCRYPT_TLS_VNC, C.VENCRYPT_TLS_NONE]
    order = x509 + anon + [C.VENCRYPT_PLAIN]
    if not creds.username:  # the *Plain types need a user name
        order = [t for t in order if t not in (C.VENCRYPT_X509_PLAIN, C.VENCRYPT_TLS_PLAIN, C.VENCRYPT_PLAIN)]
    if creds.password is None:
        order = [t for t in order if t in (C.VENCRYPT_X509_NONE, C.VENCRYPT_TLS_NONE)] + \
                [t for t in order if t not in (C.VENCRYPT_X509_NONE, C.VENCRYPT_TLS_NONE)]
    return order


def _allowed(name: str, allowed: set[str] | None) -> bool:
    return allowed is None or name.lower() in allowed


def _vencrypt_allowed(allowed: set[str] | None) -> bool:
    # Choosing VeNCrypt commits us: there is no way back to the top-level list if none of
    # its sub-types turns out to be allowed, so a server offering VeNCrypt and VncAuth
    # must get VncAuth when only "vncauth" is allowed.
    return allowed is None or any(_allowed(name, allowed) for name in C.VENCRYPT_NAMES.values())


def _subtype_name(subtype: int) -> str:
    # Servers may list plain security types (TigerVNC: 1 None, 2 VncAuth) among the sub-types.
    return C.VENCRYPT_NAMES.get(subtype) or C.SECURITY_NAMES.get(subtype) or str(subtype)


async def negotiate(stream: Stream, minor: int, creds: Credentials, tls: TLSOptions,
                    server_hostname: str, allowed: set[str] | None = None) -> SecurityOutcome:
    """Run the security handshake for protocol 3.`minor`. `allowed` (lower-case names such
    as "vncauth", "x509vnc", "none") restricts what we accept; None accepts any."""
    if minor == 3:
        chosen = await stream.u32()
        if chosen == C.SEC_INVALID:
            raise SecurityError(f"server refused the connection: {await _read_reason(stream)}")
        offered = [chosen]
    else:
        count = await stream.u8()
        if count == 0:
            raise SecurityError(f"server refused the connection: {await _read_reason(stream)}")
        offered = list(await stream.read(count))
        chosen = None
    offered_names = [C.SECURITY_NAMES.get(t, str(t)) for t in offered]

    candidates = [t for t in _client_preference(creds) if t in offered]
    if allowed is not None:
        candidates = [t for t in candidates
                      if (_vencrypt_allowed(allowed) if t == C.SEC_VENCRYPT
                          else _allowed(C.SECURITY_NAMES[t], allowed))]
    if not candidates:
        raise SecurityError(f"no supported security type: server offers {', '.join(offered_names)}")
    if minor == 3:
        if chosen not in candidates:
            raise SecurityError(f"server demands security type {offered_names[0]}, which is not supported or not allowed")
    else:
        chosen = candidates[0]
        stream.write(bytes([chosen]))

    if chosen == C.SEC_NONE:
        if minor >= 8:
            await _security_result(stream, minor, "None")
        return SecurityOutcome(offered_names, "None")
    if chosen == C.SEC_VNC_AUTH:
        await _vnc_auth(stream, creds)
        await _security_result(stream, minor, "VNC", creds.password)
        return SecurityOutcome(offered_names, "VncAuth")
    if chosen == C.SEC_ARD:
        await _ard(stream, creds)
        await _security_result(stream, minor, "Apple Remote Desktop", creds.password)
        return SecurityOutcome(offered_names, "AppleRemoteDesktop")
    used = await _vencrypt(stream, creds, tls, server_hostname, allowed)
    await _security_result(stream, minor, f"VeNCrypt {used}", creds.password)
    return SecurityOutcome(offered_names, f"VeNCrypt/{used}")


async def _vnc_auth(stream: Stream, creds: Credentials) -> None:
    if creds.password is None:
        raise AuthFailed("server requires a VNC password and none is configured")
    challenge = await stream.read(16)
    stream.write(vnc_auth_response(creds.password, challenge))
    await stream.drain()


async def _ard(stream: Stream, creds: Credentials) -> None:
    if creds.password is None or not creds.username:
        raise AuthFailed("Apple Remote Desktop authentication needs a user name and a password")
    generator = await stream.u16()
    key_len = await stream.u16()
    if not 16 <= key_len <= 1024:
        raise ProtocolError(f"server sent a Diffie-Hellman key length of {key_len} bytes")
    prime = await stream.read(key_len)
    server_public = await stream.read(key_len)
    stream.write(ard_response(generator, prime, server_public, creds.username, creds.password))
    await stream.drain()


async def _vencrypt(stream: Stream, creds: Credentials, tls: TLSOptions,
                    server_hostname: str, allowed: set[str] | None) -> str:
    major, minor = await stream.read(2)
    if (major, minor) < (0, 2):
        raise SecurityError(f"server speaks VeNCrypt {major}.{minor}; 0.2 is required")
    stream.write(b"\x00\x02")
    await stream.drain()
    if await stream.u8() != 0:
        raise SecurityError("server refused VeNCrypt version 0.2")
    count = await stream.u8()
    subtypes = list(struct.unpack(f">{count}I", await stream.read(4 * count)))
    names = [_subtype_name(t) for t in subtypes]
    have_x509_trust = bool(tls.ca_file or tls.fingerprint)
    candidates = [t for t in _vencrypt_preference(creds, tls) if t in subtypes
                  and _allowed(C.VENCRYPT_NAMES[t], allowed)
                  and (have_x509_trust or t < C.VENCRYPT_X509_NONE)]
    if not candidates:
        if not subtypes:
            raise SecurityError("server offers VeNCrypt but no VeNCrypt sub-types")
        x509_only = all(C.VENCRYPT_X509_NONE <= t <= C.VENCRYPT_X509_PLAIN for t in subtypes)
        if x509_only and not have_x509_trust:
            raise SecurityError(
                f"server offers only X509 VeNCrypt ({', '.join(names)}) and no tls_ca_file or "
                "tls_fingerprint is configured to verify its certificate")
        raise SecurityError(f"no supported VeNCrypt sub-type: server offers {', '.join(names)}")
    sub = candidates[0]
    stream.write(struct.pack(">I", sub))
    await stream.drain()

    if sub != C.VENCRYPT_PLAIN:
        # The acknowledgement byte (1: go ahead with the TLS handshake) belongs to the TLS
        # sub-types only; after Plain the server waits for the credentials straight away
        # (TigerVNC's SSecurityTLS sends it, its SSecurityPlain does not), so reading it
        # for Plain would leave both sides waiting.
        if await stream.u8() != 1:
            raise SecurityError(f"server refused VeNCrypt sub-type {C.VENCRYPT_NAMES[sub]}")
        x509 = sub >= C.VENCRYPT_X509_NONE
        context = _x509_tls_context(tls) if x509 else _anonymous_tls_context()
        try:
            await stream.start_tls(context, server_hostname=server_hostname if x509 else None)
        except ssl.SSLCertVerificationError as e:
            raise SecurityError(f"TLS verification failed: {e.verify_message}") from None
        except (ssl.SSLError, ConnectionError, OSError) as e:
            raise SecurityError(f"TLS handshake failed: {e}") from None
        if x509 and tls.fingerprint:
            der = stream.peer_certificate_der() or b""
            got = hashlib.sha256(der).hexdigest()
            if got != normalise_fingerprint(tls.fingerprint):
                raise SecurityError(f"TLS verification failed: server certificate SHA-256 {got} "
                                    "does not match the pinned fingerprint")

    if sub in (C.VENCRYPT_TLS_VNC, C.VENCRYPT_X509_VNC):
        await _vnc_auth(stream, creds)
    elif sub in (C.VENCRYPT_PLAIN, C.VENCRYPT_TLS_PLAIN, C.VENCRYPT_X509_PLAIN):
        if creds.password is None:
            raise AuthFailed("server requires a user name and password and no password is configured")
        user = (creds.username or "").encode("utf-8")
        password = creds.password.encode("utf-8")
        stream.write(struct.pack(">II", len(user), len(password)) + user + password)
        await stream.drain()
    return C.VENCRYPT_NAMES[sub]
