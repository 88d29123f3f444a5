"""Input actions for the VNC worker's b"input" request, built from tool arguments.

Pure functions: they validate and return the action list (see broker/wire.py:
{key, down} | {pointer: [x, y], buttons} | {cut_text} | {sleep_ms}), so every argument
problem is found before anything reaches the desktop and half a key combination is never
left pressed.
"""
from __future__ import annotations

from workers.rfb.keysyms import UnknownKey, char_keysym, key_keysym, parse_combo

# RFB pointer button mask bits (RFC 6143 7.5.5): 1 left, 2 middle, 3 right, 4-7 wheel.
BUTTONS = {"left": 1, "middle": 2, "right": 4}
WHEEL = {"up": 8, "down": 16, "left": 32, "right": 64}
MODIFIERS = {"ctrl": "Control_L", "shift": "Shift_L", "alt": "Alt_L", "super": "Super_L", "meta": "Meta_L"}
DRAG_STEPS = 12          # intermediate pointer positions: toolkits want motion, not a jump
DRAG_STEP_MS = 8


class InputError(ValueError):
    """A tool argument that cannot become input; the message says what is allowed."""


def key(keysym: int, down: bool) -> dict:
    return {"key": keysym, "down": down}


def pointer(x: int, y: int, buttons: int) -> dict:
    return {"pointer": [x, y], "buttons": buttons}


def modifier_keysyms(modifiers: list[str] | None) -> list[int]:
    out = []
    for m in modifiers or []:
        if m not in MODIFIERS:
            raise InputError(f"unknown modifier {m!r}: use {', '.join(MODIFIERS)}")
        out.append(key_keysym(MODIFIERS[m]))
    return out


def with_modifiers(modifiers: list[str] | None, actions: list[dict]) -> list[dict]:
    """Press the modifiers, do `actions`, release the modifiers in reverse order."""
    syms = modifier_keysyms(modifiers)
    return [key(k, True) for k in syms] + actions + [key(k, False) for k in reversed(syms)]


def click(x: int, y: int, button: str, count: int, held: int, modifiers: list[str] | None) -> list[dict]:
    """Move, then press and release `count` times; buttons already held stay held."""
    bit = BUTTONS[button]
    actions = [pointer(x, y, held)]
    for _ in range(count):
        actions += [pointer(x, y, held | bit), pointer(x, y, held & ~bit)]
    return with_modifiers(modifiers, actions)


def scroll(x: int, y: int, direction: str, amount: int, held: int, modifiers: list[str] | None) -> list[dict]:
    """Wheel clicks are button 4-7 presses in RFB, one press and release per notch."""
    bit = WHEEL[direction]
    actions = [pointer(x, y, held)]
    for _ in range(amount):
        actions += [pointer(x, y, held | bit), pointer(x, y, held)]
    return with_modifiers(modifiers, actions)


def drag(start: tuple[int, int], end: tuple[int, int], button: str, held: int,
         modifiers: list[str] | None) -> list[dict]:
    bit = BUTTONS[button]
    (x0, y0), (x1, y1) = start, end
    actions = [pointer(x0, y0, held), pointer(x0, y0, held | bit)]
    for i in range(1, DRAG_STEPS + 1):
        x = x0 + round((x1 - x0) * i / DRAG_STEPS)
        y = y0 + round((y1 - y0) * i / DRAG_STEPS)
        actions += [{"sleep_ms": DRAG_STEP_MS}, pointer(x, y, held | bit)]
    actions.append(pointer(x1, y1, held & ~bit))
    return with_modifiers(modifiers, actions)


def combos(keys: str) -> list[list[int]]:
    """"ctrl+a BackSpace" -> [[Control_L, a], [BackSpace]]: combinations separated by spaces,
    pressed one after another."""
    if not keys or not keys.strip():
        raise InputError("keys is empty: give a key or combination such as 'Return', 'ctrl+c', 'alt+F4'")
    try:
        return [parse_combo(c) for c in keys.split()]
    except UnknownKey as e:
        raise InputError(str(e)) from None


def press(keys: str) -> list[dict]:
    actions = []
    for syms in combos(keys):
        actions += [key(k, True) for k in syms] + [key(k, False) for k in reversed(syms)]
    return actions


def hold(keys: str, ms: int) -> list[dict]:
    groups = combos(keys)
    if len(groups) != 1:
        raise InputError(f"hold_key takes one key or combination, got {len(groups)}: {keys!r}")
    syms = groups[0]
    return [key(k, True) for k in syms] + [{"sleep_ms": ms}] + [key(k, False) for k in reversed(syms)]


def type_text(text: str) -> list[dict]:
    """One key press and release per character: the keysym of the character itself, which
    the server maps to whatever keycode and shift state its keyboard needs (so capitals and
    shifted symbols come out right). Newline and tab are Return and Tab."""
    if not text:
        raise InputError("text is empty: give the characters to type")
    text = text.replace("\r\n", "\n")  # one Return per line break, not two
    actions = []
    for i, ch in enumerate(text):
        try:
            sym = char_keysym(ch)
        except UnknownKey as e:
            raise InputError(f"character {i + 1} of the text: {e}; newline and tab are allowed") from None
        actions += [key(sym, True), key(sym, False)]
    return actions
