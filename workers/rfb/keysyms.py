"""X11 keysyms for text and for key names such as "ctrl+alt+t" or "Page_Down".

Every Unicode character has a keysym: Latin-1 maps to itself, everything else to
0x01000000 + code point (the X11 convention that Xvnc and x11vnc understand).
"""
from __future__ import annotations

# Named keys (X11 keysym names), matched case-insensitively, plus common aliases.
NAMED_KEYS = {
    "BackSpace": 0xFF08, "Tab": 0xFF09, "Linefeed": 0xFF0A, "Clear": 0xFF0B, "Return": 0xFF0D,
    "Pause": 0xFF13, "Scroll_Lock": 0xFF14, "Sys_Req": 0xFF15, "Escape": 0xFF1B, "Delete": 0xFFFF,
    "Home": 0xFF50, "Left": 0xFF51, "Up": 0xFF52, "Right": 0xFF53, "Down": 0xFF54,
    "Page_Up": 0xFF55, "Page_Down": 0xFF56, "End": 0xFF57, "Begin": 0xFF58,
    "Select": 0xFF60, "Print": 0xFF61, "Execute": 0xFF62, "Insert": 0xFF63, "Undo": 0xFF65,
    "Redo": 0xFF66, "Menu": 0xFF67, "Find": 0xFF68, "Cancel": 0xFF69, "Help": 0xFF6A,
    "Break": 0xFF6B, "Num_Lock": 0xFF7F,
    "KP_Space": 0xFF80, "KP_Tab": 0xFF89, "KP_Enter": 0xFF8D, "KP_Home": 0xFF95, "KP_Left": 0xFF96,
    "KP_Up": 0xFF97, "KP_Right": 0xFF98, "KP_Down": 0xFF99, "KP_Page_Up": 0xFF9A,
    "KP_Page_Down": 0xFF9B, "KP_End": 0xFF9C, "KP_Insert": 0xFF9E, "KP_Delete": 0xFF9F,
    "KP_Equal": 0xFFBD, "KP_Multiply": 0xFFAA, "KP_Add": 0xFFAB, "KP_Separator": 0xFFAC,
    "KP_Subtract": 0xFFAD, "KP_Decimal": 0xFFAE, "KP_Divide": 0xFFAF,
    **{f"KP_{i}": 0xFFB0 + i for i in range(10)},
    **{f"F{i}": 0xFFBE + i - 1 for i in range(1, 36)},
    "Shift_L": 0xFFE1, "Shift_R": 0xFFE2, "Control_L": 0xFFE3, "Control_R": 0xFFE4,
    "Caps_Lock": 0xFFE5, "Shift_Lock": 0xFFE6, "Meta_L": 0xFFE7, "Meta_R": 0xFFE8,
    "Alt_L": 0xFFE9, "Alt_R": 0xFFEA, "Super_L": 0xFFEB, "Super_R": 0xFFEC,
    "Hyper_L": 0xFFED, "Hyper_R": 0xFFEE, "ISO_Level3_Shift": 0xFE03,
    "space": 0x20, "minus": 0x2D, "plus": 0x2B, "comma": 0x2C, "period": 0x2E, "slash": 0x2F,
    "backslash": 0x5C, "semicolon": 0x3B, "apostrophe": 0x27, "grave": 0x60, "equal": 0x3D,
    "bracketleft": 0x5B, "bracketright": 0x5D,
    "XF86AudioMute": 0x1008FF12, "XF86AudioLowerVolume": 0x1008FF11,
    "XF86AudioRaiseVolume": 0x1008FF13,
}

ALIASES = {
    "enter": "Return", "ret": "Return", "esc": "Escape", "del": "Delete", "bs": "BackSpace",
    "backspace": "BackSpace", "ins": "Insert", "pgup": "Page_Up", "pageup": "Page_Up",
    "pgdn": "Page_Down", "pagedown": "Page_Down", "arrowup": "Up", "arrowdown": "Down",
    "arrowleft": "Left", "arrowright": "Right", "ctrl": "Control_L", "control": "Control_L",
    "shift": "Shift_L", "alt": "Alt_L", "option": "Alt_L", "meta": "Meta_L", "super": "Super_L",
    "win": "Super_L", "windows": "Super_L", "cmd": "Super_L", "command": "Super_L",
    "capslock": "Caps_Lock", "numlock": "Num_Lock", "scrolllock": "Scroll_Lock",
    "printscreen": "Print", "prtsc": "Print", "altgr": "ISO_Level3_Shift",
}

_BY_LOWER = {name.lower(): code for name, code in NAMED_KEYS.items()}
_BY_LOWER.update({alias: NAMED_KEYS[name] for alias, name in ALIASES.items()})

MODIFIER_KEYSYMS = {NAMED_KEYS[n] for n in ("Shift_L", "Shift_R", "Control_L", "Control_R", "Meta_L",
                                             "Meta_R", "Alt_L", "Alt_R", "Super_L", "Super_R",
                                             "Hyper_L", "Hyper_R", "ISO_Level3_Shift")}

# Characters typed as a named key rather than as themselves.
_CHAR_KEYS = {"\n": NAMED_KEYS["Return"], "\r": NAMED_KEYS["Return"], "\t": NAMED_KEYS["Tab"],
              "\b": NAMED_KEYS["BackSpace"], "\x1b": NAMED_KEYS["Escape"], "\x7f": NAMED_KEYS["Delete"]}


class UnknownKey(ValueError):
    pass


def char_keysym(char: str) -> int:
    """The keysym that types `char`."""
    if char in _CHAR_KEYS:
        return _CHAR_KEYS[char]
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0:
        raise UnknownKey(f"control character U+{code:04X} cannot be typed")
    if code <= 0xFF:
        return code
    return 0x01000000 + code


def key_keysym(name: str) -> int:
    """The keysym of one key name: an X11 name (`Return`, `F5`), an alias (`ctrl`, `esc`),
    a single character (`a`, `ß`) or a hex keysym (`0xff0d`)."""
    if not name:
        raise UnknownKey("empty key name")
    if len(name) == 1:
        return char_keysym(name)
    code = _BY_LOWER.get(name.lower())
    if code is not None:
        return code
    if name.lower().startswith("0x"):
        try:
            return int(name, 16)
        except ValueError:
            pass
    raise UnknownKey(f"unknown key {name!r}: use an X11 keysym name (Return, Page_Down, F5), "
                     "a modifier (ctrl, shift, alt, super), or a single character")


def parse_combo(combo: str) -> list[int]:
    """"ctrl+alt+t" -> keysyms in press order. A literal plus is written "plus" or "ctrl++"."""
    combo = combo.strip()
    if not combo:
        raise UnknownKey("empty key combination")
    parts = combo.split("+")
    # "ctrl++" splits into ["ctrl", "", ""]: the empty tail means a literal "+".
    if combo.endswith("+"):
        parts = [p for p in parts[:-2]] + ["+"] if combo != "+" else ["+"]
    return [key_keysym(p.strip() if p != "+" else "+") for p in parts]
