"""The security handshake against a real TigerVNC Xvnc on loopback, one server per
security type, plus small scripted servers for what Xvnc cannot be made to do (RFB 3.3
and 3.7, Apple's 3.889, the exact bytes of VeNCrypt Plain).

Xvnc black-lists a client address after 5 connections that did not authenticate (every
connection counts until one succeeds), so the shared servers run with -UseBlacklist=0;
one test turns it back on to see the refusal the client reports.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from broker.demo import free_tcp_port, start_xvnc
from certs import make_ca, make_server_pki
from workers.rfb import (AuthFailed, Credentials, RFBSession, SecurityError,
                         SessionOptions, TLSOptions)
from workers.rfb.security import vnc_auth_response

REPO = Path(__file__).resolve().parent.parent
# VNC authentication only uses the first 8 characters; these differ in the first 8.
PASSWORD = "Vq7-" + secrets.token_hex(2)
WRONG_PASSWORD = "wr0ng-" + secrets.token_hex(1)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def log_tail(desktop, lines: int = 40) -> str:
    try:
        with open(os.path.join(desktop.workdir, "xvnc.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(no xvnc.log: {e})"


@contextlib.contextmanager
def xvnc(security: str, *, password: str | None = None, extra: list[str] | None = None,
         blacklist: bool = False):
    """A small Xvnc with verbose logging (the log tail goes into failure messages)."""
    # start_xvnc turns the blacklist off; a later -UseBlacklist=1 turns it back on.
    args = ["-Log", "*:stderr:100"] + (["-UseBlacklist=1"] if blacklist else []) + (extra or [])
    desktop = start_xvnc(geometry="320x200", security=security, password=password, extra_args=args)
    try:
        yield desktop
    finally:
        desktop.stop()


def options(desktop, password: str | None = PASSWORD, username: str | None = None,
            tls: TLSOptions | None = None, **kw) -> SessionOptions:
    return SessionOptions(host=kw.pop("host", "127.0.0.1"), port=desktop.port, timeout=kw.pop("timeout", 10),
                          credentials=Credentials(username=username, password=password),
                          tls=tls or TLSOptions(), **kw)


async def connect(opts: SessionOptions):
    """Open a session, return what the handshake found, close it."""
    session = await RFBSession.open(opts)
    try:
        return session.info
    finally:
        await session.close()


def connect_ok(desktop, opts: SessionOptions):
    try:
        return run(connect(opts))
    except Exception as e:  # noqa: BLE001 - re-raised with the server's side of the story
        pytest.fail(f"{type(e).__name__}: {e}\n--- xvnc.log ---\n{log_tail(desktop)}")


def connect_fails(opts: SessionOptions, kind: type[Exception]) -> Exception:
    with pytest.raises(kind) as err:
        run(connect(opts))
    return err.value


def assert_no_secret(text: str, *secrets_: str) -> None:
    for s in secrets_:
        assert s not in text, "a password leaked into an error message"


# -- server fixtures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    server = make_server_pki(str(directory))
    _, _, wrong_ca = make_ca(str(directory), "wrong-ca")
    return server, wrong_ca


@pytest.fixture(scope="module")
def vncauth_server():
    with xvnc("VncAuth", password=PASSWORD) as desktop:
        yield desktop


@pytest.fixture(scope="module")
def tlsvnc_server():
    with xvnc("TLSVnc", password=PASSWORD) as desktop:
        yield desktop


@pytest.fixture(scope="module")
def x509vnc_server(pki):
    server, _ = pki
    with xvnc("X509Vnc", password=PASSWORD,
              extra=["-X509Cert", server.cert_file, "-X509Key", server.key_file]) as desktop:
        yield desktop


# -- 1. VncAuth --------------------------------------------------------------------------
def test_vncauth_right_password(vncauth_server):
    info = connect_ok(vncauth_server, options(vncauth_server))
    assert info.security_used == "VncAuth"
    assert info.security_offered == ["VncAuth"]
    assert (info.width, info.height) == (320, 200)


def test_vncauth_wrong_password_is_auth_failed(vncauth_server):
    err = connect_fails(options(vncauth_server, password=WRONG_PASSWORD), AuthFailed)
    assert_no_secret(str(err), WRONG_PASSWORD, PASSWORD)


def test_vncauth_without_password_says_so(vncauth_server):
    err = connect_fails(options(vncauth_server, password=None), AuthFailed)
    assert "password" in str(err)


def test_blacklisted_client_gets_the_servers_reason():
    # With the blacklist on, a few unauthenticated connections in a row get the address
    # refused before the handshake with Xvnc's 3.3-style "Too many security failures".
    # (start_xvnc's own port check already counts as one, hence the loop, not a count.)
    with xvnc("VncAuth", password=PASSWORD, blacklist=True,
              extra=["-BlacklistThreshold=2", "-BlacklistTimeout=60"]) as desktop:
        errors = []
        for _ in range(5):
            with pytest.raises((AuthFailed, SecurityError)) as err:
                run(connect(options(desktop, password=WRONG_PASSWORD)))
            errors.append(err.value)
            if isinstance(err.value, SecurityError):
                break
        assert isinstance(errors[0], AuthFailed)
        assert isinstance(errors[-1], SecurityError) and "Too many security failures" in str(errors[-1])
        # Now even the right password is turned away, with the same clear reason.
        err = connect_fails(options(desktop), SecurityError)
        assert "Too many security failures" in str(err)
        assert_no_secret("".join(map(str, errors)), WRONG_PASSWORD, PASSWORD)


# -- 2. anonymous TLS --------------------------------------------------------------------
def test_tlsvnc_works(tlsvnc_server):
    info = connect_ok(tlsvnc_server, options(tlsvnc_server))
    assert info.security_used == "VeNCrypt/TLSVnc"
    assert info.security_offered == ["VeNCrypt"]
    # The server really ran TLS (and an anonymous key exchange), not just the VeNCrypt preamble.
    assert re.search(r"TLS handshake completed with\s+\(TLS1\.2\)-\(ANON-", log_tail(tlsvnc_server, 400))


def test_tlsvnc_wrong_password_is_auth_failed(tlsvnc_server):
    err = connect_fails(options(tlsvnc_server, password=WRONG_PASSWORD), AuthFailed)
    assert_no_secret(str(err), WRONG_PASSWORD, PASSWORD)


@pytest.mark.parametrize("security", ["TLSNone", "X509None"])
def test_vencrypt_without_password(security, pki):
    server, _ = pki
    extra = ["-X509Cert", server.cert_file, "-X509Key", server.key_file] if "X509" in security else []
    with xvnc(security, extra=extra) as desktop:
        info = connect_ok(desktop, options(desktop, password=None, tls=TLSOptions(ca_file=server.ca_file)))
        assert info.security_used == f"VeNCrypt/{security}"


# -- 3. X509 -----------------------------------------------------------------------------
def test_x509vnc_with_ca(x509vnc_server, pki):
    server, _ = pki
    info = connect_ok(x509vnc_server, options(x509vnc_server, tls=TLSOptions(ca_file=server.ca_file)))
    assert info.security_used == "VeNCrypt/X509Vnc"


def test_x509vnc_with_ca_by_name(x509vnc_server, pki):
    server, _ = pki
    info = connect_ok(x509vnc_server, options(x509vnc_server, host="localhost",
                                              tls=TLSOptions(ca_file=server.ca_file)))
    assert info.security_used == "VeNCrypt/X509Vnc"


def test_x509vnc_with_pinned_fingerprint(x509vnc_server, pki):
    server, _ = pki
    # Written the way openssl x509 -fingerprint prints it: upper case, colon-separated.
    pretty = ":".join(re.findall("..", server.fingerprint.upper()))
    for pin in (server.fingerprint, pretty):
        info = connect_ok(x509vnc_server, options(x509vnc_server, tls=TLSOptions(fingerprint=pin)))
        assert info.security_used == "VeNCrypt/X509Vnc"


def test_x509vnc_wrong_ca_is_refused(x509vnc_server, pki):
    _, wrong_ca = pki
    err = connect_fails(options(x509vnc_server, tls=TLSOptions(ca_file=wrong_ca)), SecurityError)
    assert "verification failed" in str(err)


def test_x509vnc_wrong_fingerprint_is_refused(x509vnc_server):
    err = connect_fails(options(x509vnc_server, tls=TLSOptions(fingerprint="ab" * 32)), SecurityError)
    assert "does not match the pinned fingerprint" in str(err)


def test_malformed_fingerprint_is_a_clear_error(x509vnc_server):
    err = connect_fails(options(x509vnc_server, tls=TLSOptions(fingerprint="not-a-sha256")), SecurityError)
    assert "64 hex digits" in str(err)


def test_x509_without_trust_anchor_is_refused(x509vnc_server):
    err = connect_fails(options(x509vnc_server), SecurityError)
    assert re.search(r"offers only X509 .*no tls_ca_file or tls_fingerprint", str(err)), str(err)


def test_x509_hostname_is_checked(pki, tmp_path):
    server, _ = pki
    other = make_server_pki(str(tmp_path), names=["vnc.example.test"])
    with xvnc("X509Vnc", password=PASSWORD,
              extra=["-X509Cert", other.cert_file, "-X509Key", other.key_file]) as desktop:
        err = connect_fails(options(desktop, tls=TLSOptions(ca_file=other.ca_file)), SecurityError)
        assert "verification failed" in str(err) and "mismatch" in str(err)
        info = connect_ok(desktop, options(desktop, tls=TLSOptions(ca_file=other.ca_file, verify_hostname=False)))
        assert info.security_used == "VeNCrypt/X509Vnc"
        # A certificate from another CA is still refused with the name check off.
        err = connect_fails(options(desktop, tls=TLSOptions(ca_file=server.ca_file, verify_hostname=False)),
                            SecurityError)
        assert "verification failed" in str(err)


# -- 4. Plain / TLSPlain / X509Plain through PAM -----------------------------------------
PAM_DIRS = ("/usr/lib/x86_64-linux-gnu/security", "/lib/x86_64-linux-gnu/security",
            "/usr/lib64/security", "/usr/lib/security", "/lib/security")


def _pam_exec_available() -> bool:
    return any(os.path.exists(os.path.join(d, "pam_exec.so")) for d in PAM_DIRS)


@pytest.fixture(scope="module")
def pam_account(tmp_path_factory):
    """A PAM service of our own that accepts exactly one made-up user and password.

    Xvnc checks Plain credentials with pam_authenticate(PAMService, user, password). Rather
    than create a system user, we write /etc/pam.d/vncmcp-test-<random> whose auth step is
    pam_exec running a checker script from our temp dir (it compares a SHA-256 of the
    password, so the password is not stored), and whose account step is pam_permit. No
    other service reads that file, and it is removed afterwards; a leftover file would
    only point at a deleted script, which fails closed."""
    if os.geteuid() != 0:
        pytest.skip("Plain/TLSPlain/X509Plain against Xvnc need root to write a PAM service file "
                    "under /etc/pam.d (the Plain wire format is still tested against a scripted server)")
    if not _pam_exec_available():
        pytest.skip("pam_exec.so is not installed, so no PAM service can be scripted for Xvnc's Plain check")
    if not os.access("/etc/pam.d", os.W_OK):
        pytest.skip("/etc/pam.d is not writable")
    directory = tmp_path_factory.mktemp("pam")
    os.chmod(directory, 0o700)
    user = "vncmcp-plain-" + secrets.token_hex(3)
    password = "pam-" + secrets.token_urlsafe(12)
    verdicts = directory / "verdicts.log"
    checker = directory / "check.py"
    checker.write_text(f"""#!{sys.executable} -I
# Run by pam_exec with expose_authtok: the password arrives on stdin, NUL-terminated.
import hashlib, os, sys
secret = sys.stdin.buffer.read().split(b"\\0")[0].rstrip(b"\\n")
user = os.environ.get("PAM_USER", "")
ok = user == {user!r} and hashlib.sha256(secret).hexdigest() == {hashlib.sha256(password.encode()).hexdigest()!r}
with open({str(verdicts)!r}, "a") as f:
    f.write(("accepted " if ok else "rejected ") + user + "\\n")
sys.exit(0 if ok else 1)
""")
    checker.chmod(0o700)
    service = "vncmcp-test-" + secrets.token_hex(4)
    pam_file = Path("/etc/pam.d") / service
    assert not pam_file.exists()
    pam_file.write_text(f"# temporary, written by vncmcp's tests/test_security_live.py\n"
                        f"auth    required  pam_exec.so quiet expose_authtok {checker}\n"
                        f"account required  pam_permit.so\n")
    try:
        yield {"service": service, "user": user, "password": password, "verdicts": verdicts}
    finally:
        pam_file.unlink(missing_ok=True)


def _verdicts(account) -> list[str]:
    try:
        return account["verdicts"].read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("security", ["Plain", "TLSPlain", "X509Plain"])
def test_plain_types_against_pam(security, pam_account, pki):
    server, _ = pki
    user, password = pam_account["user"], pam_account["password"]
    extra = ["-PlainUsers", user, "-PAMService", pam_account["service"]]
    tls = TLSOptions()
    if security == "X509Plain":
        extra += ["-X509Cert", server.cert_file, "-X509Key", server.key_file]
        tls = TLSOptions(ca_file=server.ca_file)
    with xvnc(security, extra=extra) as desktop:
        before = len(_verdicts(pam_account))
        info = connect_ok(desktop, options(desktop, username=user, password=password, tls=tls))
        assert info.security_used == f"VeNCrypt/{security}"
        # PAM (our checker) really made the decision.
        assert _verdicts(pam_account)[before:] == [f"accepted {user}"]

        err = connect_fails(options(desktop, username=user, password=WRONG_PASSWORD, tls=tls), AuthFailed)
        assert_no_secret(str(err), WRONG_PASSWORD, password)
        assert _verdicts(pam_account)[before + 1:] == [f"rejected {user}"]

        # A user not listed in -PlainUsers is refused by Xvnc before PAM is asked.
        err = connect_fails(options(desktop, username="someone-else", password=password, tls=tls), AuthFailed)
        assert_no_secret(str(err), password)
        assert len(_verdicts(pam_account)) == before + 2


def test_plain_needs_a_user_name(pam_account):
    # Without a user name the client cannot pick any *Plain sub-type.
    with xvnc("TLSPlain", extra=["-PlainUsers", pam_account["user"], "-PAMService", pam_account["service"]]) as d:
        err = connect_fails(options(d, password=pam_account["password"]), SecurityError)
        assert "TLSPlain" in str(err)


# -- 5. allowed_security -----------------------------------------------------------------
def test_allowed_security_excludes_everything_offered(tlsvnc_server):
    err = connect_fails(options(tlsvnc_server, allowed_security={"vncauth"}), SecurityError)
    assert "no supported" in str(err)


def test_allowed_security_picks_the_allowed_one():
    # Xvnc offers VeNCrypt first and VncAuth second; restricted to vncauth we must not
    # walk into VeNCrypt (whose sub-types are then all forbidden) but use VncAuth.
    with xvnc("TLSVnc,VncAuth", password=PASSWORD) as desktop:
        info = connect_ok(desktop, options(desktop, allowed_security={"vncauth"}))
        assert (info.security_offered, info.security_used) == (["VeNCrypt", "VncAuth"], "VncAuth")
        info = connect_ok(desktop, options(desktop, allowed_security={"tlsvnc"}))
        assert info.security_used == "VeNCrypt/TLSVnc"
        info = connect_ok(desktop, options(desktop))
        assert info.security_used == "VeNCrypt/TLSVnc"


# -- 6. scripted servers: protocol versions and the Plain wire format --------------------
PIXEL_FORMAT = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


def server_init(name: bytes = b"scripted") -> bytes:
    return struct.pack(">HH", 64, 48) + PIXEL_FORMAT + struct.pack(">I", len(name)) + name


class OneConversationServer:
    """Plays one scripted RFB conversation on a loopback port. The script gets
    (reader, writer) and returns whatever the test wants to inspect; an assertion inside
    it comes back out of result()."""

    def __init__(self, script):
        self.script = script

    async def __aenter__(self):
        self.outcome = asyncio.get_running_loop().create_future()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        try:
            result = await asyncio.wait_for(self.script(reader, writer), 10)
            if not self.outcome.done():
                self.outcome.set_result(result)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            if not self.outcome.done():
                self.outcome.set_exception(e)
        finally:
            writer.close()

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def result(self):
        return await asyncio.wait_for(self.outcome, 10)

    def options(self, password=None, username=None, **kw) -> SessionOptions:
        return SessionOptions(port=self.port, timeout=kw.pop("timeout", 5),
                              credentials=Credentials(username=username, password=password), **kw)


async def finish_init(reader, writer) -> int:
    """ClientInit, ServerInit, then wait until the client hangs up; returns the shared flag."""
    shared = (await reader.readexactly(1))[0]
    writer.write(server_init())
    await writer.drain()
    while await reader.read(4096):  # SetPixelFormat, SetEncodings, update requests
        pass
    return shared


def vnc_auth_script(version: bytes, password: str):
    async def script(reader, writer):
        writer.write(version)
        client_version = await reader.readexactly(12)
        if version == b"RFB 003.003\n":
            writer.write(struct.pack(">I", 2))  # 3.3: the server decides, VncAuth
        else:
            writer.write(b"\x01\x02")
            assert await reader.readexactly(1) == b"\x02"
        challenge = os.urandom(16)
        writer.write(challenge)
        ok = await reader.readexactly(16) == vnc_auth_response(password, challenge)
        # SecurityResult; before 3.8 a failure carries no reason.
        writer.write(struct.pack(">I", 0 if ok else 1))
        await writer.drain()
        if not ok:
            return client_version, False
        await finish_init(reader, writer)
        return client_version, True
    return script


def test_rfb_33_vncauth():
    async def main():
        async with OneConversationServer(vnc_auth_script(b"RFB 003.003\n", PASSWORD)) as server:
            info = await connect(server.options(PASSWORD))
            assert await server.result() == (b"RFB 003.003\n", True)
        assert (info.version, info.used_version) == ("3.3", "3.3")
        assert (info.security_offered, info.security_used) == (["VncAuth"], "VncAuth")
        assert (info.width, info.height, info.name) == (64, 48, "scripted")
    run(main())


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.007\n"])
def test_old_protocol_wrong_password(version):
    async def main():
        async with OneConversationServer(vnc_auth_script(version, PASSWORD)) as server:
            with pytest.raises(AuthFailed) as err:
                await connect(server.options(WRONG_PASSWORD))
            assert (await server.result())[1] is False
        assert_no_secret(str(err.value), WRONG_PASSWORD, PASSWORD)
    run(main())


def test_rfb_33_server_refusal_carries_its_reason():
    async def script(reader, writer):
        writer.write(b"RFB 003.003\n")
        await reader.readexactly(12)
        reason = b"Too many security failures"
        writer.write(struct.pack(">II", 0, len(reason)) + reason)
        await writer.drain()

    async def main():
        async with OneConversationServer(script) as server:
            with pytest.raises(SecurityError, match="Too many security failures"):
                await connect(server.options(PASSWORD))
            await server.result()
    run(main())


def test_rfb_37_none_has_no_security_result():
    async def script(reader, writer):
        writer.write(b"RFB 003.007\n")
        assert await reader.readexactly(12) == b"RFB 003.007\n"
        writer.write(b"\x01\x01")
        assert await reader.readexactly(1) == b"\x01"
        # No SecurityResult for None in 3.7: straight on to ClientInit. A client that
        # waits for one deadlocks here and fails on its handshake timeout.
        return await finish_init(reader, writer)

    async def main():
        async with OneConversationServer(script) as server:
            info = await connect(server.options(timeout=3))
            assert await server.result() == 1  # shared
        assert (info.version, info.used_version, info.security_used) == ("3.7", "3.7", "None")
    run(main())


def test_rfb_3889_is_answered_as_38():
    async def script(reader, writer):
        writer.write(b"RFB 003.889\n")
        client_version = await reader.readexactly(12)
        writer.write(b"\x01\x01")
        assert await reader.readexactly(1) == b"\x01"
        writer.write(struct.pack(">I", 0))  # 3.8 sends a SecurityResult even for None
        await finish_init(reader, writer)
        return client_version

    async def main():
        async with OneConversationServer(script) as server:
            info = await connect(server.options(timeout=3))
            assert await server.result() == b"RFB 003.008\n"
        assert (info.version, info.used_version, info.security_used) == ("3.889", "3.8", "None")
    run(main())


def test_rfb_38_no_security_types_carries_the_reason():
    async def script(reader, writer):
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        reason = b"server is busy"
        writer.write(b"\x00" + struct.pack(">I", len(reason)) + reason)
        await writer.drain()

    async def main():
        async with OneConversationServer(script) as server:
            with pytest.raises(SecurityError, match="server is busy"):
                await connect(server.options())
            await server.result()
    run(main())


def plain_script(user: str, password: str):
    """VeNCrypt 0.2 offering only Plain (256), checking the credentials byte for byte."""
    expected = (struct.pack(">II", len(user.encode()), len(password.encode()))
                + user.encode() + password.encode())

    async def script(reader, writer):
        writer.write(b"RFB 003.008\n")
        assert await reader.readexactly(12) == b"RFB 003.008\n"
        writer.write(b"\x01\x13")                      # one type: VeNCrypt (19)
        assert await reader.readexactly(1) == b"\x13"
        writer.write(b"\x00\x02")                      # VeNCrypt 0.2
        assert await reader.readexactly(2) == b"\x00\x02"
        writer.write(b"\x00" + b"\x01" + struct.pack(">I", 256))  # version ok; sub-types: Plain
        assert await reader.readexactly(4) == struct.pack(">I", 256)
        # No acknowledgement byte here: that belongs to the TLS sub-types. Plain goes
        # straight on to the credentials, as in TigerVNC and libvncserver.
        ulen, plen = struct.unpack(">II", await reader.readexactly(8))
        got = struct.pack(">II", ulen, plen) + await reader.readexactly(ulen + plen)
        if got != expected:
            reason = b"invalid password or username"
            writer.write(struct.pack(">II", 1, len(reason)) + reason)
            await writer.drain()
            return got
        writer.write(struct.pack(">I", 0))
        await finish_init(reader, writer)
        return got
    return script, expected


def test_plain_wire_format():
    # Non-ASCII on purpose: the lengths are UTF-8 byte counts, not characters.
    user, password = "jürgen", "pässwört-✓"
    script, expected = plain_script(user, password)

    async def main():
        async with OneConversationServer(script) as server:
            info = await connect(server.options(password, user))
            assert await server.result() == expected
        assert info.security_used == "VeNCrypt/Plain"
    run(main())


def test_plain_wrong_password_is_auth_failed():
    script, _ = plain_script("alice", PASSWORD)

    async def main():
        async with OneConversationServer(script) as server:
            with pytest.raises(AuthFailed, match="invalid password or username") as err:
                await connect(server.options(WRONG_PASSWORD, "alice"))
            await server.result()
        assert_no_secret(str(err.value), WRONG_PASSWORD, PASSWORD)
    run(main())


# -- the probe command -------------------------------------------------------------------
def probe(port: int, password: str, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VNCMCP_") and k != "CREDENTIALS_DIRECTORY"}
    env["VNCMCP_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "broker.cli", "probe", "--host", "127.0.0.1",
                           "--port", str(port), "--timeout", str(timeout), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_probe_exit_codes(x509vnc_server, pki):
    server, wrong_ca = pki
    ok = probe(x509vnc_server.port, PASSWORD, "--tls-ca-file", server.ca_file)
    assert ok.returncode == 0, ok.stderr
    assert "VeNCrypt/X509Vnc" in ok.stdout
    assert_no_secret(ok.stdout + ok.stderr, PASSWORD)

    wrong_pw = probe(x509vnc_server.port, WRONG_PASSWORD, "--tls-ca-file", server.ca_file)
    assert wrong_pw.returncode == 4, wrong_pw.stdout + wrong_pw.stderr
    assert "authentication failed" in wrong_pw.stderr
    assert_no_secret(wrong_pw.stdout + wrong_pw.stderr, WRONG_PASSWORD, PASSWORD)

    bad_tls = probe(x509vnc_server.port, PASSWORD, "--tls-ca-file", wrong_ca)
    assert bad_tls.returncode == 5, bad_tls.stdout + bad_tls.stderr
    assert "verification failed" in bad_tls.stderr
    assert_no_secret(bad_tls.stdout + bad_tls.stderr, PASSWORD)


def test_probe_refused_port_is_exit_3():
    result = probe(free_tcp_port(), PASSWORD, timeout=2)
    assert result.returncode == 3, result.stdout + result.stderr
    assert_no_secret(result.stdout + result.stderr, PASSWORD)
