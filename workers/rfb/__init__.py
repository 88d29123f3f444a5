"""Our RFB client (RFC 6143). See client.py for the session API."""
from .client import (Bell, Cursor, CutText, CutTextSent, FrameUpdate, Limits, RFBSession,
                     ServerInfo, SessionOptions, default_encodings, open_session)
from .errors import AuthFailed, ConnectFailed, ProtocolError, RFBError, SecurityError, ServerClosed
from .security import Credentials, TLSOptions

__all__ = ["Bell", "Cursor", "CutText", "CutTextSent", "FrameUpdate", "Limits", "RFBSession",
           "ServerInfo", "SessionOptions", "default_encodings", "open_session", "AuthFailed",
           "ConnectFailed", "ProtocolError", "RFBError", "SecurityError", "ServerClosed",
           "Credentials", "TLSOptions"]
