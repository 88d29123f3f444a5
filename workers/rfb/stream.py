"""A byte stream over asyncio with the fixed-size reads RFB is made of."""
from __future__ import annotations

import asyncio
import ssl
import struct

from .errors import ServerClosed

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_S32 = struct.Struct(">i")


class Stream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.bytes_read = 0

    async def read(self, n: int) -> bytes:
        try:
            data = await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            raise ServerClosed(f"server closed the connection ({len(e.partial)} of {n} bytes read)") from None
        except (ConnectionError, OSError) as e:
            raise ServerClosed(f"connection lost: {e.strerror or e}") from None
        self.bytes_read += n
        return data

    async def u8(self) -> int:
        return (await self.read(1))[0]

    async def u16(self) -> int:
        return _U16.unpack(await self.read(2))[0]

    async def u32(self) -> int:
        return _U32.unpack(await self.read(4))[0]

    async def s32(self) -> int:
        return _S32.unpack(await self.read(4))[0]

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise ServerClosed(f"connection lost: {e.strerror or e}") from None

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        await self.drain()
        await self.writer.start_tls(context, server_hostname=server_hostname)

    def peer_certificate_der(self) -> bytes | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object else None

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # closing a half-dead transport may raise; nothing to do then
            pass
