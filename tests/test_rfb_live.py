"""The RFB client against real servers (TigerVNC Xvnc, x11vnc on Xvfb) on loopback."""
import asyncio
import os
import tempfile
import time

import pytest

from rfbtools import Pump, matches_x_server, mismatch_report, options_for, type_text
from workers.rfb import AuthFailed, ConnectFailed, Credentials, RFBSession, SessionOptions
from workers.rfb import constants as C
from broker.demo import free_tcp_port, start_xvnc


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_raw_frame_is_pixel_exact(any_server):
    any_server.xterm(geometry="60x10+30+40", command=["sh", "-c", "echo pixel exact $((6*7)); sleep 60"])
    time.sleep(0.5)

    async def main():
        session = await RFBSession.open(options_for(any_server, encodings=[C.ENC_RAW]))
        pump = Pump(session)
        try:
            ok = await matches_x_server(pump, any_server.env)
            assert ok, mismatch_report(session, any_server.env)
            assert session.info.encodings_seen & {"Raw"}
        finally:
            await pump.close()
    run(main())


PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F)) + " "
NON_ASCII = "Grüße, naïve café — ½"


@pytest.mark.parametrize("text", [PRINTABLE, NON_ASCII], ids=["ascii", "unicode"])
def test_typed_text_arrives_exactly(any_server, text):
    out = os.path.join(any_server.workdir, "typed.txt")
    # xterm runs `cat` with the terminal in raw mode is not needed: line mode + Ctrl-D ends input.
    any_server.xterm(geometry="100x10+0+0", extra=["-u8"],
                     command=["sh", "-c", f"stty -echo; cat > {out}"])
    time.sleep(0.8)

    async def main():
        session = await RFBSession.open(options_for(any_server))
        pump = Pump(session)
        try:
            await pump.quiet()
            await session.pointer(200, 60)  # focus follows the pointer in a bare X server
            await type_text(session, text + "\n")
            await session.key(0xFFE3, True)
            await session.key(ord("d"), True)
            await session.key(ord("d"), False)
            await session.key(0xFFE3, False)
            await pump.until(lambda: os.path.exists(out) and open(out, "rb").read().endswith(b"\n"), timeout=10)
        finally:
            await pump.close()
    run(main())
    with open(out, encoding="utf-8") as f:
        assert f.read() == text + "\n"


def test_vnc_auth_right_and_wrong_password():
    with start_xvnc(geometry="640x480", security="VncAuth", password="s3cret-pw") as desktop:
        async def good():
            s = await RFBSession.open(options_for(desktop, credentials=Credentials(password="s3cret-pw")))
            assert s.info.security_used == "VncAuth"
            assert (s.info.width, s.info.height) == (640, 480)
            await s.close()

        async def bad():
            with pytest.raises(AuthFailed) as err:
                await RFBSession.open(options_for(desktop, credentials=Credentials(password="wrong-guess")))
            assert "wrong-guess" not in str(err.value)
        run(good())
        run(bad())


def test_refused_connection_is_a_clear_error():
    port = free_tcp_port()

    async def main():
        with pytest.raises(ConnectFailed, match="refused"):
            await RFBSession.open(SessionOptions(port=port, timeout=2))
    run(main())
