"""The MCP surface of vncmcp: every tool, its parameters, annotations and results.

This module is the contract of ../shared/DESIGN.md's tool table and the only place that
knows about MCP. The work happens elsewhere: desktops.py (mirrors, input, settling),
images.py (screenshots), text.py (finding text), actions.py (building input).

Conventions, the same for every tool:
- coordinates are the desktop's own pixels; a region is {x, y, width, height};
- every tool takes an optional `desktop` (the configured names are in its description);
- a result has a short text for the model and, where it helps programs, structured
  content with an output schema;
- a bad argument or an unusable desktop is a tool error (isError) that says what was wrong
  and what is allowed; argument-schema violations are reworded the same way;
- every input tool waits for the screen to settle and reports what changed.

No `from __future__ import annotations` here: the tools' parameter annotations use names
local to build_server (DesktopName), and MCPServer reads them when the tool is registered.
"""
import asyncio
import base64
import time
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from mcp_frontend import actions, images
from mcp_frontend.audit import AuditLog
from mcp_frontend.actions import InputError
from mcp_frontend.desktops import DesktopLink, Feedback, Frontend, FrontendError
from mcp_frontend.mirror import merge_rects, rects_touch
from mcp_frontend.text import Line, Match, compile_query, find, pick, plain_text, select

MAX_TYPE_TEXT = 5000
MAX_CLIPBOARD = 100_000
MAX_QUERY = 500
MAX_MARKS = 400
MAX_TIMEOUT_MS = 60_000
STABLE_QUIET = 0.5            # wait_for(stable=True): this long without a change
LISTED_MATCHES = 10


# -- parameter and result types ----------------------------------------------------------------
class Region(BaseModel):
    """A rectangle of the desktop in its own pixels."""
    x: int = Field(ge=0, description="left edge")
    y: int = Field(ge=0, description="top edge")
    width: int = Field(ge=1, description="width in pixels")
    height: int = Field(ge=1, description="height in pixels")

    def rect(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height


class TextLineOut(BaseModel):
    text: str
    box: list[int] = Field(description="x0, y0, x1, y1 (x1/y1 exclusive), desktop pixels")
    conf: float = Field(description="OCR confidence 0-100")
    click: list[int] = Field(description="x, y of the line's centre")


class MatchOut(BaseModel):
    text: str = Field(description="the matched characters")
    line: str = Field(description="the whole line they are in")
    box: list[int] = Field(description="x0, y0, x1, y1 of the matched characters")
    click: list[int] = Field(description="x, y to click")
    whole_word: bool


class MarkOut(BaseModel):
    number: int
    text: str
    box: list[int]
    click: list[int]


class ScreenshotOut(BaseModel):
    desktop: str
    desktop_width: int
    desktop_height: int
    region: Region
    image_width: int
    image_height: int
    scale: float = Field(description="image pixels per desktop pixel: desktop x = region.x + image x / scale")
    format: str
    bytes: int
    version: int = Field(description="frame version shown (see changes)")
    stale: bool = Field(description="the desktop is disconnected: this is the last frame received")
    overlay: str
    grid_step: int | None = None
    marks: list[MarkOut] | None = None
    notes: list[str] = []


class ReadTextOut(BaseModel):
    desktop: str
    text: str
    lines: list[TextLineOut]
    version: int | None
    stale: bool = Field(description="the screen changed after the text was read")


class FindTextOut(BaseModel):
    desktop: str
    query: str
    matches: list[MatchOut]
    version: int | None
    stale: bool


class ActionOut(BaseModel):
    desktop: str
    action: str
    version: int
    changed: bool
    settled: bool = Field(description="the screen went quiet before the time limit")
    elapsed_ms: int
    regions: list[Region]
    text: list[TextLineOut] | None = Field(description="text now in the changed regions (None if not read)")
    text_note: str | None = None
    notes: list[str] = []


class WaitOut(BaseModel):
    desktop: str
    condition: str
    met: bool
    elapsed_ms: int
    version: int
    matches: list[MatchOut] | None = None
    regions: list[Region] | None = None


class ChangesOut(BaseModel):
    desktop: str
    since: int
    version: int
    changed: bool
    complete: bool = Field(description="false when `since` is older than the change history")
    regions: list[Region]
    text: list[TextLineOut] | None
    text_note: str | None = None


class ClipboardOut(BaseModel):
    desktop: str
    text: str
    length: int
    notes: list[str] = []


class DesktopStatusOut(BaseModel):
    desktop: str
    connected: bool
    state: str
    since: float | None
    error: str | None
    server: str | None
    name: str | None = Field(description="the desktop's name as the VNC server gives it")
    width: int
    height: int
    cursor: list[int] | None
    version: int
    epoch: int | None
    frame_seq: int
    frame_age_s: float | None
    ocr: dict[str, Any]


class StatusOut(BaseModel):
    desktops: list[DesktopStatusOut]


Button = Literal["left", "middle", "right"]
Modifier = Literal["ctrl", "shift", "alt", "super", "meta"]
X = Annotated[int, Field(ge=0, le=65535, description="x in desktop pixels")]
Y = Annotated[int, Field(ge=0, le=65535, description="y in desktop pixels")]
OptX = Annotated[int | None, Field(ge=0, le=65535, description="x in desktop pixels")]
OptY = Annotated[int | None, Field(ge=0, le=65535, description="y in desktop pixels")]
Modifiers = Annotated[list[Modifier] | None, Field(max_length=5, description="keys held during the action")]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
POINTER_MOVE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
INPUT = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)


# -- formatting ---------------------------------------------------------------------------------
def _box(b) -> list[int]:
    return [int(v) for v in b]


def _center(b) -> list[int]:
    return [(b[0] + b[2] - 1) // 2, (b[1] + b[3] - 1) // 2]


def _line_out(line: Line) -> TextLineOut:
    return TextLineOut(text=line.text, box=_box(line.box), conf=round(line.conf, 1), click=_center(line.box))


def _match_out(m: Match) -> MatchOut:
    return MatchOut(text=m.text, line=m.line, box=_box(m.box), click=list(m.click), whole_word=m.whole_word)


def _region_out(r) -> Region:
    return Region(x=r[0], y=r[1], width=r[2], height=r[3])


def _regions_text(regions) -> str:
    return ", ".join(f"{w}x{h} at ({x},{y})" for x, y, w, h in regions)


def _lines_text(lines: list[Line], limit: int = 2000) -> str:
    out = "\n".join(f"  [{l.box[0]},{l.box[1]},{l.box[2]},{l.box[3]}] {l.text}" for l in lines)
    return out if len(out) <= limit else out[:limit] + " ..."


def _result(text: str, structured: BaseModel, extra: list | None = None) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)] + (extra or []),
                          structured_content=structured.model_dump(mode="json"))


def _feedback_result(link: DesktopLink, action: str, fb: Feedback, notes: list[str] | None = None) -> CallToolResult:
    notes = (notes or []) + fb.notes
    if not fb.changed:
        text = f"{action}. The screen did not change within {fb.elapsed_ms} ms."
    else:
        settled = "settled" if fb.settled else "still changing at the time limit"
        text = (f"{action}. The screen changed ({settled}, {fb.elapsed_ms} ms) in "
                f"{len(fb.regions)} region(s): {_regions_text(fb.regions)}.")
        if fb.lines:
            text += "\nText now in the changed regions:\n" + _lines_text(fb.lines)
        elif fb.lines is not None:
            text += " No text in them."
        if fb.text_note:
            text += f"\n({fb.text_note})"
    if notes:
        text += "\nNote: " + "; ".join(notes)
    out = ActionOut(desktop=link.name, action=action, version=fb.version, changed=fb.changed, settled=fb.settled,
                    elapsed_ms=fb.elapsed_ms, regions=[_region_out(r) for r in fb.regions],
                    text=None if fb.lines is None else [_line_out(l) for l in fb.lines],
                    text_note=fb.text_note, notes=notes)
    return _result(text, out)


def describe_validation(tool: str, error: ValidationError) -> str:
    """A pydantic ValidationError in the words a model can act on: which argument, what is
    wrong with it and what is allowed."""
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "arguments"
        got = e.get("input")
        shown = ""
        if e["type"] not in ("missing",) and not isinstance(got, dict):
            shown = f" (got {len(got)} characters)" if isinstance(got, str) and len(got) > 60 else f" (got {got!r})"
        parts.append(f"{where}: {e['msg']}{shown}")
    return f"invalid arguments for {tool}: " + "; ".join(parts)


class VncMcpServer(MCPServer):
    """MCPServer whose argument-validation errors read like the tools' own errors, and
    whose input tool calls go to the audit log."""

    audit: AuditLog | None = None
    default_desktop: str | None = None

    async def call_tool(self, name, arguments, context=None):
        started = time.time()
        result = "ok"
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            if type(e) is ToolError and isinstance(e.__cause__, ValidationError):
                e = ToolError(describe_validation(name, e.__cause__))
                result = f"error: {e}"
                raise e from e.__cause__
            result = f"error: {e}"
            raise
        except BaseException as e:
            result = f"error: {type(e).__name__}"
            raise
        finally:
            if self.audit is not None:
                shown = dict(arguments or {})
                shown.setdefault("desktop", self.default_desktop)
                self.audit.record(name, shown, result, started, time.time())


def _problem(e: Exception) -> ToolError:
    return ToolError(str(e))


# -- the server ----------------------------------------------------------------------------------
def build_server(fe: Frontend) -> MCPServer:
    names = ", ".join(fe.cfg.desktops)
    DesktopName = Annotated[str | None, Field(
        description=f"which desktop: {names} (default {fe.default})", max_length=200)]

    server = VncMcpServer(
        "vncmcp",
        title="VNC desktop",
        instructions=(
            "See and drive a desktop over VNC. Coordinates are always the desktop's own pixels "
            "(screenshots state their scale). Prefer read_text/find_text and click(text=...) when the "
            "screen has the text you need; screenshot(overlay='marks') numbers clickable words for "
            "click(mark=N). Input tools wait for the screen to settle and report what changed, so "
            "you rarely need a screenshot after each action; changes() says what changed since you "
            "last looked. wait_for waits for text to appear or go, or for the screen to change or "
            "settle, instead of sleeping."),
        log_level="WARNING",
    )
    server.audit = AuditLog(fe.cfg.audit_log, fe.cfg.audit_redact_text)
    server.default_desktop = fe.default

    def lookup(desktop: str | None) -> DesktopLink:
        try:
            return fe.link(desktop)
        except FrontendError as e:
            raise _problem(e) from None

    async def link_for(desktop: str | None) -> DesktopLink:
        """The desktop a tool works on, with its first frame if that is due any moment."""
        link = lookup(desktop)
        await link.first_frame()
        return link

    async def fresh_reading(link: DesktopLink, region_box=None):
        """Text of the current screen; one more read when the screen moved during the first.
        On a disconnected desktop: the text of the last frame, marked stale."""
        reading = await link.read_text(region_box)
        if reading.stale and link.mirror.live:
            reading = await link.read_text(region_box)
        if not link.mirror.live:
            reading.stale = True
        return reading

    def stale_note(link: DesktopLink, reading) -> str:
        problem = link.mirror.problem
        if problem:
            return f"STALE: {problem}; this is the text of the last frame received.\n"
        return ""

    def region_box(link: DesktopLink, region: Region | None):
        if region is None:
            return None
        x, y, w, h = link.check_region(region.rect())
        return x, y, x + w, y + h

    # -- seeing ----------------------------------------------------------------------------------
    @server.tool(annotations=READ_ONLY)
    async def screenshot(
        region: Annotated[Region | None, Field(description="only this part of the desktop (a zoom)")] = None,
        max_width: Annotated[int, Field(ge=16, le=16384, description="image width limit")] = images.DEFAULT_MAX_WIDTH,
        max_height: Annotated[int, Field(ge=16, le=16384, description="image height limit")] = images.DEFAULT_MAX_HEIGHT,
        format: Annotated[Literal["png", "jpeg", "webp"] | None, Field(
            description="image format; default PNG, or JPEG when PNG would exceed max_bytes")] = None,
        overlay: Annotated[Literal["none", "grid", "marks"], Field(
            description="grid: coordinate lines; marks: numbered OCR words for click(mark=N)")] = "none",
        max_bytes: Annotated[int, Field(ge=20_000, le=20_000_000, description="encoded image size limit")]
        = images.DEFAULT_MAX_BYTES,
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ScreenshotOut]:
        """The screen or a region of it as an image, scaled to fit max_width x max_height and
        max_bytes. The result states the scale: desktop x = region x + image x / scale."""
        link = await link_for(desktop)
        try:
            link.require_frame()
            rect = link.check_region(region.rect()) if region else (0, 0, *link.mirror.size)
            marks = None
            if overlay == "marks":
                x, y, w, h = rect
                reading = await fresh_reading(link, (x, y, x + w, y + h))
                words = [wd for line in reading.lines for wd in (line.words or [])]
                marks = [images.Mark(i + 1, wd.text, wd.box) for i, wd in enumerate(words[:MAX_MARKS])]
        except FrontendError as e:
            raise _problem(e) from None
        mirror = link.mirror
        version, stale_reason = mirror.version, mirror.problem
        grid = images.grid_step(rect[2], rect[3]) if overlay == "grid" else None
        # The same picture of the same frame is encoded once: an agent that looks again at
        # an unchanged screen costs no encoding (marks depend on OCR too: never cached).
        key = (version, rect, max_width, max_height, format, max_bytes, overlay)
        cached = link.shot_cache
        if marks is None and cached is not None and cached[0] == key:
            shot, image = cached[1], cached[2]
        else:
            pixels = mirror.copy_region(rect)
            shot = await asyncio.to_thread(images.render, pixels, rect[:2], max_width=max_width,
                                           max_height=max_height, fmt=format, max_bytes=max_bytes, grid=grid,
                                           marks=marks)
            image = ImageContent(type="image", data=base64.b64encode(shot.data).decode(), mime_type=shot.mime)
            link.shot_cache = None if marks is not None else (key, shot, image)
        if marks is not None:
            link.marks = {m.number: m for m in marks}
            link.marks_version = version
        link.looked = max(link.looked, version)
        dw, dh = mirror.size
        x, y, w, h = rect
        inv = 1 / shot.scale
        text = (f"Screenshot of desktop {link.name} ({dw}x{dh}), region {w}x{h} at ({x},{y}): "
                f"{shot.width}x{shot.height} {shot.format.upper()}, {len(shot.data)} bytes, scale {shot.scale:.4g}. "
                f"Desktop x = {x} + image x * {inv:.4g}; desktop y = {y} + image y * {inv:.4g}. Version {version}.")
        if stale_reason:
            when = time.strftime("%H:%M:%S", time.localtime(mirror.frame_time or time.time()))
            text = f"STALE: {stale_reason}; this is the last frame received, at {when}.\n" + text
        if grid:
            text += f" Grid lines every {grid} desktop pixels, labelled with desktop coordinates."
        if marks is not None:
            listed = " ".join(f"[{m.number}] {m.text}" for m in marks)
            more = f" (first {MAX_MARKS} words only: use a region for the rest)" if len(marks) == MAX_MARKS else ""
            text += (f"\n{len(marks)} marks{more}; click one with click(mark=N):\n{listed}" if marks
                     else "\nNo text found to mark.")
        if shot.notes:
            text += "\nNote: " + "; ".join(shot.notes)
        out = ScreenshotOut(
            desktop=link.name, desktop_width=dw, desktop_height=dh, region=_region_out(rect),
            image_width=shot.width, image_height=shot.height, scale=shot.scale, format=shot.format,
            bytes=len(shot.data), version=version, stale=stale_reason is not None, overlay=overlay, grid_step=grid,
            marks=None if marks is None else [MarkOut(number=m.number, text=m.text, box=_box(m.box),
                                                      click=list(m.center)) for m in marks],
            notes=shot.notes)
        return _result(text, out, [image])

    @server.tool(annotations=READ_ONLY)
    async def read_text(
        region: Annotated[Region | None, Field(description="only text inside this part of the desktop")] = None,
        min_confidence: Annotated[float, Field(ge=0, le=100, description="drop words below this OCR confidence")] = 0,
        desktop: DesktopName = None,
    ) -> CallToolResult:
        """The text on the screen (OCR): lines with their boxes and confidence, and the plain text."""
        # Structured content shaped as ReadTextOut, but no declared output schema: clients
        # validate results against it, and for a screen of a few hundred lines that costs
        # more than everything else in the call (12 ms of 20 in the Python client).
        link = await link_for(desktop)
        try:
            reading = await fresh_reading(link, region_box(link, region))
        except FrontendError as e:
            raise _problem(e) from None
        lines = select(reading.lines, None, min_confidence)
        if reading.version is not None:
            link.looked = max(link.looked, reading.version)
        plain = plain_text(lines)
        head = f"Text on desktop {link.name}" + (f" in region {_regions_text([region.rect()])}" if region else "")
        text = f"{head} ({len(lines)} lines):\n{plain}" if lines else f"{head}: no text found."
        if lines:
            text += "\n\nLines with boxes [x0,y0,x1,y1]:\n" + _lines_text(lines, 6000)
        if reading.stale and link.mirror.live:
            text += "\nNote: the screen was changing while it was read."
        text = stale_note(link, reading) + text
        out = ReadTextOut(desktop=link.name, text=plain, lines=[_line_out(l) for l in lines],
                          version=reading.version, stale=reading.stale)
        return _result(text, out)

    @server.tool(annotations=READ_ONLY)
    async def find_text(
        text: Annotated[str, Field(min_length=1, max_length=MAX_QUERY, description="text to look for (any case)")],
        regex: Annotated[bool, Field(description="treat text as a Python regular expression")] = False,
        region: Annotated[Region | None, Field(description="only look inside this part of the desktop")] = None,
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, FindTextOut]:
        """Where a string (or regex) is on the screen: the boxes of the matched characters and
        the points to click on them."""
        link = await link_for(desktop)
        try:
            pattern = compile_query(text, regex)
            reading = await fresh_reading(link, region_box(link, region))
        except (FrontendError, ValueError) as e:
            raise _problem(e) from None
        matches = find(reading.lines, pattern)
        if matches:
            listed = "\n".join(f"  {i}. '{m.text}' click ({m.click[0]},{m.click[1]}) box {list(m.box)} in line '{m.line}'"
                               for i, m in enumerate(matches, 1))
            summary = f"{len(matches)} match(es) for {text!r} on desktop {link.name}:\n{listed}"
        else:
            summary = f"{text!r} is not on the screen of desktop {link.name}" + (" in that region." if region else ".")
        summary = stale_note(link, reading) + summary
        out = FindTextOut(desktop=link.name, query=text, matches=[_match_out(m) for m in matches],
                          version=reading.version, stale=reading.stale)
        return _result(summary, out)

    # -- pointer -----------------------------------------------------------------------------------
    async def target_of_text(link: DesktopLink, text: str, match: int | None) -> tuple[int, int, str]:
        pattern = compile_query(text, False)
        reading = await fresh_reading(link)
        matches = find(reading.lines, pattern)
        if not matches:
            raise FrontendError(f"{text!r} is not on the screen (read_text shows what is); nothing was clicked")
        if match is not None:
            if match > len(matches):
                raise FrontendError(f"match={match} but {text!r} is on the screen {len(matches)} time(s): "
                                    f"match must be 1-{len(matches)}")
            chosen = matches[match - 1]
        else:
            chosen = pick(matches)
            if chosen is None:
                listed = "; ".join(f"{i}. '{m.text}' at ({m.click[0]},{m.click[1]}) in '{m.line}'"
                                   for i, m in enumerate(matches[:LISTED_MATCHES], 1))
                raise FrontendError(f"{text!r} is on the screen {len(matches)} times, so nothing was clicked: "
                                    f"{listed}. Say which with match=N")
        return chosen.click[0], chosen.click[1], f" on '{chosen.text}'"

    @server.tool(annotations=INPUT)
    async def click(
        x: OptX = None,
        y: OptY = None,
        text: Annotated[str | None, Field(min_length=1, max_length=MAX_QUERY,
                                          description="click on this text (OCR); any case")] = None,
        mark: Annotated[int | None, Field(ge=1, description="click on this numbered mark of the last "
                                                            "screenshot(overlay='marks')")] = None,
        match: Annotated[int | None, Field(ge=1, description="which match of `text` when it is on screen "
                                                             "several times (1 = first in reading order)")] = None,
        button: Button = "left",
        count: Annotated[int, Field(ge=1, le=3, description="1 click, 2 double, 3 triple")] = 1,
        modifiers: Modifiers = None,
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ActionOut]:
        """Click at x,y, on a text on the screen, or on a numbered mark. Give exactly one of:
        x and y, text, mark. Returns what changed on the screen."""
        link = await link_for(desktop)
        given = [name for name, v in (("x/y", x if x is not None else y), ("text", text), ("mark", mark))
                 if v is not None]
        try:
            if len(given) != 1:
                raise FrontendError("give exactly one target: x and y, or text, or mark"
                                    + (f" (got {' and '.join(given)})" if given else ""))
            if match is not None and text is None:
                raise FrontendError("match chooses among the matches of text: give text too")
            link.require_live()
            notes = []
            where = ""
            if text is not None:
                px, py, where = await target_of_text(link, text, match)
            elif mark is not None:
                if not link.marks:
                    raise FrontendError("there are no marks yet: take screenshot(overlay='marks') first")
                if mark not in link.marks:
                    raise FrontendError(f"there is no mark {mark}: the last marks screenshot has marks 1-{len(link.marks)}")
                m = link.marks[mark]
                (px, py), where = m.center, f" on mark {mark} '{m.text}'"
                if link.marks_version != link.mirror.version:
                    notes.append("the screen has changed since the marks were made; the mark may have moved")
            else:
                if x is None or y is None:
                    raise FrontendError("give both x and y")
                px, py = x, y
            link.check_point(px, py)
            fb = await link.act(actions.click(px, py, button, count, link.buttons, modifiers))
        except (FrontendError, InputError, ValueError) as e:
            raise _problem(e) from None
        kind = {1: "clicked", 2: "double-clicked", 3: "triple-clicked"}[count]
        mods = "+".join(modifiers) + " " if modifiers else ""
        return _feedback_result(link, f"{mods}{kind} {button} at ({px},{py}){where}", fb, notes)

    @server.tool(annotations=POINTER_MOVE)
    async def move_mouse(x: X, y: Y, desktop: DesktopName = None) -> Annotated[CallToolResult, ActionOut]:
        """Move the pointer (buttons held by mouse_down stay held). Returns what changed (hover effects)."""
        link = await link_for(desktop)
        try:
            link.check_point(x, y)
            fb = await link.act([actions.pointer(x, y, link.buttons)])
        except FrontendError as e:
            raise _problem(e) from None
        return _feedback_result(link, f"moved the pointer to ({x},{y})", fb)

    @server.tool(annotations=INPUT)
    async def drag(
        start_x: X, start_y: Y, end_x: X, end_y: Y,
        button: Button = "left",
        modifiers: Modifiers = None,
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ActionOut]:
        """Press a button at the start point, move to the end point, release."""
        link = await link_for(desktop)
        try:
            link.check_point(start_x, start_y, "start")
            link.check_point(end_x, end_y, "end")
            fb = await link.act(actions.drag((start_x, start_y), (end_x, end_y), button, link.buttons, modifiers))
        except (FrontendError, InputError) as e:
            raise _problem(e) from None
        return _feedback_result(link, f"dragged {button} from ({start_x},{start_y}) to ({end_x},{end_y})", fb)

    @server.tool(annotations=POINTER_MOVE)
    async def scroll(
        x: X, y: Y,
        direction: Literal["up", "down", "left", "right"],
        amount: Annotated[int, Field(ge=1, le=50, description="wheel notches")] = 3,
        modifiers: Modifiers = None,
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ActionOut]:
        """Turn the mouse wheel at x,y (ctrl+scroll zooms in many applications)."""
        link = await link_for(desktop)
        try:
            link.check_point(x, y)
            fb = await link.act(actions.scroll(x, y, direction, amount, link.buttons, modifiers))
        except (FrontendError, InputError) as e:
            raise _problem(e) from None
        return _feedback_result(link, f"scrolled {direction} {amount} at ({x},{y})", fb)

    async def press_or_release(link: DesktopLink, button: str, x, y, down: bool) -> CallToolResult:
        try:
            if (x is None) != (y is None):
                raise FrontendError("give both x and y, or neither (to use the pointer's position)")
            if x is None:
                # where we put it, else where the server says it is
                known = link.pointer or link.mirror.cursor
                if known is None:
                    raise FrontendError("the pointer position is not known yet: give x and y")
                x, y = known
            link.check_point(x, y)
            bit = actions.BUTTONS[button]
            held = link.buttons | bit if down else link.buttons & ~bit
            fb = await link.act([actions.pointer(x, y, link.buttons), actions.pointer(x, y, held)])
            link.buttons = held
        except FrontendError as e:
            raise _problem(e) from None
        verb = "pressed" if down else "released"
        return _feedback_result(link, f"{verb} {button} at ({x},{y})", fb)

    @server.tool(annotations=INPUT)
    async def mouse_down(button: Button = "left", x: OptX = None, y: OptY = None,
                         desktop: DesktopName = None) -> Annotated[CallToolResult, ActionOut]:
        """Press and hold a mouse button (at x,y, or where the pointer is). Release with mouse_up."""
        return await press_or_release(await link_for(desktop), button, x, y, True)

    @server.tool(annotations=INPUT)
    async def mouse_up(button: Button = "left", x: OptX = None, y: OptY = None,
                       desktop: DesktopName = None) -> Annotated[CallToolResult, ActionOut]:
        """Release a mouse button (at x,y, or where the pointer is)."""
        return await press_or_release(await link_for(desktop), button, x, y, False)

    # -- keyboard ----------------------------------------------------------------------------------
    KEYS_HELP = ("key names: X11 keysyms (Return, Tab, Escape, BackSpace, Delete, Home, End, Page_Up, Up, F5...), "
                 "aliases (enter, esc, ctrl, shift, alt, super), single characters; '+' joins a combination, "
                 "a space separates keys pressed one after another")

    @server.tool(annotations=INPUT)
    async def press_key(
        keys: Annotated[str, Field(min_length=1, max_length=500, description="e.g. 'Return', 'ctrl+alt+t', "
                                   "'ctrl+a BackSpace'; " + KEYS_HELP)],
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ActionOut]:
        """Press a key or key combination (or several, separated by spaces). Returns what changed."""
        link = await link_for(desktop)
        try:
            batch = actions.press(keys)
            fb = await link.act(batch)
        except (FrontendError, InputError) as e:
            raise _problem(e) from None
        return _feedback_result(link, f"pressed {keys.strip()}", fb)

    @server.tool(annotations=INPUT)
    async def hold_key(
        keys: Annotated[str, Field(min_length=1, max_length=200, description="one key or combination, e.g. "
                                   "'shift' or 'ctrl+Right'")],
        ms: Annotated[int, Field(ge=1, le=10_000, description="how long to hold, milliseconds")],
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ActionOut]:
        """Hold a key or combination down for ms milliseconds, then release it."""
        link = await link_for(desktop)
        try:
            batch = actions.hold(keys, ms)
            fb = await link.act(batch, timeout=ms / 1000 + 10)
        except (FrontendError, InputError) as e:
            raise _problem(e) from None
        return _feedback_result(link, f"held {keys.strip()} for {ms} ms", fb)

    @server.tool(annotations=INPUT)
    async def type_text(
        text: Annotated[str, Field(min_length=1, max_length=MAX_TYPE_TEXT,
                                   description="any Unicode text; newline presses Return, tab presses Tab")],
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ActionOut]:
        """Type text as key presses into whatever has the keyboard focus. Returns what changed."""
        link = await link_for(desktop)
        try:
            batch = actions.type_text(text)
            fb = await link.act(batch, timeout=30)
        except (FrontendError, InputError) as e:
            raise _problem(e) from None
        shown = text if len(text) <= 60 else text[:57] + "..."
        return _feedback_result(link, f"typed {len(text)} characters {shown!r}", fb)

    # -- waiting and changes ----------------------------------------------------------------------
    @server.tool(annotations=READ_ONLY)
    async def wait_for(
        text: Annotated[str | None, Field(min_length=1, max_length=MAX_QUERY,
                                          description="until this text is on the screen")] = None,
        gone: Annotated[str | None, Field(min_length=1, max_length=MAX_QUERY,
                                          description="until this text is no longer on the screen")] = None,
        change: Annotated[bool, Field(description="until the screen (or region) changes")] = False,
        stable: Annotated[bool, Field(description=f"until the screen (or region) has not changed for "
                                                  f"{int(STABLE_QUIET * 1000)} ms")] = False,
        region: Annotated[Region | None, Field(description="watch only this part of the desktop")] = None,
        regex: Annotated[bool, Field(description="text/gone are Python regular expressions")] = False,
        timeout_ms: Annotated[int, Field(ge=0, le=MAX_TIMEOUT_MS, description="give up after this long")] = 10_000,
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, WaitOut]:
        """Wait until text appears or disappears, or the screen changes or becomes stable. Give
        exactly one of text, gone, change, stable. Returns as soon as the condition holds; met
        is false if the timeout came first."""
        link = await link_for(desktop)
        started = time.monotonic()
        deadline = started + timeout_ms / 1000
        conditions = [n for n, v in (("text", text), ("gone", gone), ("change", change), ("stable", stable)) if v]
        try:
            if len(conditions) != 1:
                raise FrontendError("give exactly one condition: text, gone, change=true or stable=true"
                                    + (f" (got {', '.join(conditions)})" if conditions else ""))
            link.require_live()
            box = region_box(link, region)
            rect = region.rect() if region else None
            kind = conditions[0]
            mirror = link.mirror
            matches = regions = None
            if kind in ("text", "gone"):
                query = text if kind == "text" else gone
                pattern = compile_query(query, regex)
                label = f"{kind} {query!r}"
                while True:
                    reading = await link.read_text(box, timeout=max(deadline - time.monotonic(), 0.5))
                    found = find(reading.lines, pattern)
                    met = (bool(found) if kind == "text" else not found) and not reading.stale
                    left = deadline - time.monotonic()
                    if met or left <= 0:
                        matches = found
                        break
                    await link.text.wait_update(link, reading.token, left)
            elif kind == "change":
                label = "change" + (f" in {_regions_text([rect])}" if rect else "")
                seen, met = mirror.version, False
                while not met and (left := deadline - time.monotonic()) > 0:
                    if not await mirror.wait_change(seen, left):
                        break
                    fresh, _ = mirror.changes_since(seen)
                    seen = mirror.version
                    hits = [r for c in fresh for r in c.rects if rect is None or rects_touch(r, rect)]
                    if hits:
                        met, regions = True, hits
            else:
                label = "stable" + (f" in {_regions_text([rect])}" if rect else "")
                met = await mirror.wait_quiet(STABLE_QUIET, max(deadline - time.monotonic(), 0), rect)
        except (FrontendError, ValueError) as e:
            raise _problem(e) from None
        elapsed = round((time.monotonic() - started) * 1000)
        verdict = "met" if met else f"NOT met: timed out after {timeout_ms} ms"
        summary = f"wait_for {label} on desktop {link.name}: {verdict} ({elapsed} ms)."
        if matches and kind == "text":
            summary += " Found: " + "; ".join(f"'{m.text}' click ({m.click[0]},{m.click[1]})"
                                             for m in matches[:LISTED_MATCHES])
        elif matches and kind == "gone":
            summary += " Still there: " + "; ".join(f"'{m.text}' at ({m.click[0]},{m.click[1]})"
                                                   for m in matches[:LISTED_MATCHES])
        merged = merge_rects(regions) if regions else None
        if merged:
            summary += f" Changed: {_regions_text(merged)}."
        out = WaitOut(desktop=link.name, condition=label, met=met, elapsed_ms=elapsed, version=mirror.version,
                      matches=None if matches is None else [_match_out(m) for m in matches],
                      regions=None if merged is None else [_region_out(r) for r in merged])
        return _result(summary, out)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=False,
                                            open_world_hint=True))
    async def changes(
        since: Annotated[int | None, Field(ge=0, description="a version from an earlier result; default: "
                                                            "the last time you looked")] = None,
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ChangesOut]:
        """What changed on the screen since you last looked (or since a given version): the
        changed regions and the text now in them."""
        link = await link_for(desktop)
        try:
            link.require_frame()
            start = link.looked if since is None else since
            if start > link.mirror.version:
                raise FrontendError(f"since={since} is ahead of the screen: the current version is {link.mirror.version}")
            fb = await link.describe_changes(start)
        except FrontendError as e:
            raise _problem(e) from None
        if not fb.changed:
            text = f"Nothing changed on desktop {link.name} since version {start} (now {fb.version})."
        else:
            text = (f"Desktop {link.name} changed since version {start} (now {fb.version}) in "
                    f"{len(fb.regions)} region(s): {_regions_text(fb.regions)}.")
            if fb.lines:
                text += "\nText now in them:\n" + _lines_text(fb.lines)
            if fb.text_note:
                text += f"\n({fb.text_note})"
        if fb.notes:
            text += "\nNote: " + "; ".join(fb.notes)
        problem = link.mirror.problem
        if problem:
            text += f"\nNote: {problem}"
        out = ChangesOut(desktop=link.name, since=start, version=fb.version, changed=fb.changed,
                         complete=fb.complete, regions=[_region_out(r) for r in fb.regions],
                         text=None if fb.lines is None else [_line_out(l) for l in fb.lines], text_note=fb.text_note)
        return _result(text, out)

    # -- clipboard ----------------------------------------------------------------------------------
    @server.tool(annotations=READ_ONLY)
    async def get_clipboard(desktop: DesktopName = None) -> Annotated[CallToolResult, ClipboardOut]:
        """The desktop's clipboard text (what was last copied there)."""
        link = await link_for(desktop)
        try:
            header, _ = await link.request(b"clipboard")
        except FrontendError as e:
            raise _problem(e) from None
        clip = header.get("text") or ""
        text = (f"Clipboard of desktop {link.name} ({len(clip)} characters):\n{clip}" if clip
                else f"The clipboard of desktop {link.name} is empty (nothing copied since the connection began).")
        return _result(text, ClipboardOut(desktop=link.name, text=clip, length=len(clip)))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                            open_world_hint=True))
    async def set_clipboard(
        text: Annotated[str, Field(max_length=MAX_CLIPBOARD, description="the text to put on the clipboard")],
        desktop: DesktopName = None,
    ) -> Annotated[CallToolResult, ClipboardOut]:
        """Put text on the desktop's clipboard (paste it there with e.g. ctrl+v or shift+Insert)."""
        link = await link_for(desktop)
        try:
            link.require_live()
            notes = await link.send([{"cut_text": text}])
        except FrontendError as e:
            raise _problem(e) from None
        summary = f"Put {len(text)} characters on the clipboard of desktop {link.name}."
        if notes:
            summary += "\nNote: " + "; ".join(notes)
        return _result(summary, ClipboardOut(desktop=link.name, text=text, length=len(text), notes=notes))

    # -- status -------------------------------------------------------------------------------------
    @server.tool(annotations=READ_ONLY)
    async def status(desktop: DesktopName = None) -> Annotated[CallToolResult, StatusOut]:
        """Connection state, desktop name and size, pointer, frame version and age, OCR health
        (of one desktop, or of all when none is named)."""
        chosen = [lookup(desktop)] if desktop else list(fe.links.values())
        entries, lines = [], []
        now = time.time()
        for link in chosen:
            m = link.mirror
            w, h = m.size
            state = "connected" if m.live else ("waiting for first frame" if m.state.connected
                                                else ("disconnected" if m.state.since else "no worker"))
            cursor = m.cursor or link.pointer
            age = round(now - m.frame_time, 3) if m.frame_time else None
            ocr = await link.text.health(link)
            entries.append(DesktopStatusOut(
                desktop=link.name, connected=m.live, state=state, since=m.state.since, error=m.state.error,
                server=m.state.server, name=m.state.name, width=w, height=h,
                cursor=list(cursor) if cursor else None, version=m.version, epoch=m.epoch, frame_seq=m.seq,
                frame_age_s=age, ocr=ocr))
            line = f"{link.name}: {state}"
            if m.problem and not m.live:
                line += f" ({m.problem})"
            if w:
                line += f"; {m.state.name or 'unnamed'} {w}x{h} at {m.state.server}"
            line += f"; version {m.version}"
            if age is not None:
                line += f", last change {age:.1f} s ago"
            if cursor:
                line += f"; pointer ({cursor[0]},{cursor[1]})"
            line += "; " + ("OCR ok" if ocr.get("available") else ocr.get("error", "OCR unavailable"))
            lines.append(line)
        return _result("\n".join(lines), StatusOut(desktops=entries))

    return server
