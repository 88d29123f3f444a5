"""Numbers from RFC 6143 and the RFB community specification (rfbproto)."""

# Security types
SEC_INVALID = 0
SEC_NONE = 1
SEC_VNC_AUTH = 2
SEC_VENCRYPT = 19
SEC_ARD = 30  # Apple Remote Desktop (Diffie-Hellman)

SECURITY_NAMES = {
    SEC_INVALID: "Invalid", SEC_NONE: "None", SEC_VNC_AUTH: "VncAuth",
    SEC_VENCRYPT: "VeNCrypt", SEC_ARD: "AppleRemoteDesktop", 5: "RA2", 6: "RA2ne",
    16: "Tight", 17: "Ultra", 18: "TLS", 22: "SASL", 113: "MSLogonII",
}

# VeNCrypt sub-types
VENCRYPT_PLAIN = 256
VENCRYPT_TLS_NONE = 257
VENCRYPT_TLS_VNC = 258
VENCRYPT_TLS_PLAIN = 259
VENCRYPT_X509_NONE = 260
VENCRYPT_X509_VNC = 261
VENCRYPT_X509_PLAIN = 262

VENCRYPT_NAMES = {
    VENCRYPT_PLAIN: "Plain", VENCRYPT_TLS_NONE: "TLSNone", VENCRYPT_TLS_VNC: "TLSVnc",
    VENCRYPT_TLS_PLAIN: "TLSPlain", VENCRYPT_X509_NONE: "X509None",
    VENCRYPT_X509_VNC: "X509Vnc", VENCRYPT_X509_PLAIN: "X509Plain",
}

# Client -> server message types
C_SET_PIXEL_FORMAT = 0
C_SET_ENCODINGS = 2
C_FB_UPDATE_REQUEST = 3
C_KEY_EVENT = 4
C_POINTER_EVENT = 5
C_CUT_TEXT = 6
C_ENABLE_CONTINUOUS_UPDATES = 150
C_FENCE = 248
C_QEMU = 255
QEMU_EXTENDED_KEY_EVENT = 0  # sub-type of C_QEMU

# Server -> client message types
S_FB_UPDATE = 0
S_SET_COLOUR_MAP = 1
S_BELL = 2
S_CUT_TEXT = 3
S_END_OF_CONTINUOUS_UPDATES = 150
S_FENCE = 248

# Encodings
ENC_RAW = 0
ENC_COPYRECT = 1
ENC_RRE = 2
ENC_HEXTILE = 5
ENC_ZLIB = 6
ENC_TIGHT = 7
ENC_TRLE = 15
ENC_ZRLE = 16

# Pseudo-encodings
ENC_JPEG_QUALITY_0 = -32     # -32..-23: Tight JPEG quality 0..9
ENC_COMPRESS_LEVEL_0 = -256  # -256..-247: compression level 0..9
ENC_DESKTOP_SIZE = -223
ENC_LAST_RECT = -224
ENC_POINTER_POS = -232
ENC_CURSOR = -239
ENC_QEMU_EXT_KEY = -258
ENC_DESKTOP_NAME = -307
ENC_EXT_DESKTOP_SIZE = -308
ENC_FENCE = -312
ENC_CONTINUOUS_UPDATES = -313
ENC_EXT_CLIPBOARD = -1063131698  # 0xC0A1E5CE as a signed 32-bit number

ENCODING_NAMES = {
    ENC_RAW: "Raw", ENC_COPYRECT: "CopyRect", ENC_RRE: "RRE", ENC_HEXTILE: "Hextile",
    ENC_ZLIB: "ZLIB", ENC_TIGHT: "Tight", ENC_TRLE: "TRLE", ENC_ZRLE: "ZRLE",
    ENC_DESKTOP_SIZE: "DesktopSize", ENC_LAST_RECT: "LastRect", ENC_POINTER_POS: "PointerPos",
    ENC_CURSOR: "Cursor", ENC_QEMU_EXT_KEY: "QEMUExtendedKeyEvent",
    ENC_DESKTOP_NAME: "DesktopName", ENC_EXT_DESKTOP_SIZE: "ExtendedDesktopSize",
    ENC_FENCE: "Fence", ENC_CONTINUOUS_UPDATES: "ContinuousUpdates",
    ENC_EXT_CLIPBOARD: "ExtendedClipboard",
}
ENCODINGS_BY_NAME = {name.lower(): num for num, name in ENCODING_NAMES.items() if num >= 0}


def encoding_name(number: int) -> str:
    if ENC_JPEG_QUALITY_0 <= number <= ENC_JPEG_QUALITY_0 + 9:
        return f"JPEGQuality{number - ENC_JPEG_QUALITY_0}"
    if ENC_COMPRESS_LEVEL_0 <= number <= ENC_COMPRESS_LEVEL_0 + 9:
        return f"CompressLevel{number - ENC_COMPRESS_LEVEL_0}"
    return ENCODING_NAMES.get(number, f"encoding {number}")


# Fence flags
FENCE_BLOCK_BEFORE = 1 << 0
FENCE_BLOCK_AFTER = 1 << 1
FENCE_SYNC_NEXT = 1 << 2
FENCE_REQUEST = 1 << 31
FENCE_KNOWN_FLAGS = FENCE_BLOCK_BEFORE | FENCE_BLOCK_AFTER | FENCE_SYNC_NEXT

# Extended Clipboard flags
CLIP_TEXT = 1 << 0
CLIP_CAPS = 1 << 24
CLIP_REQUEST = 1 << 25
CLIP_PEEK = 1 << 26
CLIP_NOTIFY = 1 << 27
CLIP_PROVIDE = 1 << 28
CLIP_ACTION_MASK = 0xFF000000
CLIP_FORMAT_MASK = 0x0000FFFF
