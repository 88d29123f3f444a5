"""Errors an RFB session ends with. Messages name what the server did; never a password."""


class RFBError(Exception):
    """Base class: the session cannot go on."""


class ConnectFailed(RFBError):
    """TCP connect refused, unreachable or timed out."""


class AuthFailed(RFBError):
    """The server refused our credentials (wrong password, wrong user)."""


class SecurityError(RFBError):
    """No security type we both support, or TLS verification failed."""


class ProtocolError(RFBError):
    """The server sent something malformed, out of bounds or over a configured limit."""


class ServerClosed(RFBError):
    """The server closed the connection."""
