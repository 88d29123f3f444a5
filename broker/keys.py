"""CURVE keys for the OCR job endpoint over TCP: `vncmcp keygen DIR`.

Layout of DIR (every file z85 text, mode 0600, DIR itself 0700):

    server.public  server.secret     the broker's pair
    client.public  client.secret     the pair remote OCR workers use
    authorized/*.public              more client public keys the broker accepts (optional)

The broker reads server.* and accepts client.public plus authorized/*.public. A remote
worker needs a copy of server.public and client.* (`vncmcp ocr-worker --connect
tcp://HOST:PORT --keys DIR`). Secret keys are never logged.
"""
from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field

import zmq

SERVER, CLIENT = "server", "client"


class KeysError(ValueError):
    """Keys missing or unreadable; the message names the file."""


def _write_private(path: str, data: bytes) -> None:
    # O_EXCL: never overwrite a key someone already distributed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data + b"\n")


def generate(directory: str) -> list[str]:
    """Write the server and client pairs into `directory`; refuse to overwrite."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    names = [f"{who}.{part}" for who in (SERVER, CLIENT) for part in ("public", "secret")]
    existing = [n for n in names if os.path.exists(os.path.join(directory, n))]
    if existing:
        raise KeysError(f"{directory} already holds {', '.join(existing)}; remove them to make new keys")
    written = []
    for who in (SERVER, CLIENT):
        public, secret = zmq.curve_keypair()
        for part, key in (("public", public), ("secret", secret)):
            path = os.path.join(directory, f"{who}.{part}")
            _write_private(path, key)
            written.append(path)
    return written


def read_key(directory: str, name: str) -> bytes:
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as e:
        raise KeysError(f"CURVE key {path}: {e.strerror}") from None
    if len(key) != 40:
        raise KeysError(f"CURVE key {path} is not a z85 key (40 characters)")
    return key


@dataclass
class ServerKeys:
    public: bytes
    secret: bytes = field(repr=False)
    allowed: set[bytes] = field(default_factory=set)


def server_keys(directory: str) -> ServerKeys:
    allowed = {read_key(directory, f"{CLIENT}.public")} if os.path.exists(
        os.path.join(directory, f"{CLIENT}.public")) else set()
    for path in sorted(glob.glob(os.path.join(directory, "authorized", "*.public"))):
        allowed.add(read_key(os.path.dirname(path), os.path.basename(path)))
    if not allowed:
        raise KeysError(f"no client public keys in {directory} (client.public or authorized/*.public)")
    return ServerKeys(read_key(directory, f"{SERVER}.public"), read_key(directory, f"{SERVER}.secret"), allowed)


def client_keys(directory: str) -> tuple[bytes, bytes, bytes]:
    """(server public, client public, client secret) for a remote worker or frontend."""
    return (read_key(directory, f"{SERVER}.public"), read_key(directory, f"{CLIENT}.public"),
            read_key(directory, f"{CLIENT}.secret"))


def apply_client(socket: zmq.Socket, directory: str) -> None:
    server_public, public, secret = client_keys(directory)
    socket.curve_serverkey = server_public
    socket.curve_publickey = public
    socket.curve_secretkey = secret


def main(args) -> int:
    try:
        written = generate(args.directory)
    except (KeysError, OSError) as e:
        print(f"vncmcp keygen: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(f"copy {SERVER}.public and {CLIENT}.* to each remote OCR worker; "
          f"set keys_dir = \"{os.path.abspath(args.directory)}\" and ocr_listen in [service]")
    return 0
