"""Every MCP tool and every argument error, through an in-memory MCP client against the
real frontend, on a real service (`vncmcp serve`: VNC worker, OCR broker, OCR worker)
driving a real Xvnc desktop with xterm and xmessage in it. What the tools claim is checked
against what X clients see: the pointer position (xdotool), selections and the clipboard
(xclip), files written by `cat`, exit codes of xmessage buttons."""
import asyncio
import base64
import io
import os
import re
import time

import numpy as np
import pytest
from PIL import Image

from test_mcp_kit import (FONT, PASSWORD, Recorder, pointer_position, run, selection_is, session, start_service,
                          text_of, until, wait_window, x_selection)

MAIN = (10, 10)         # a point inside the main terminal (focus follows the pointer: no WM)


@pytest.fixture(scope="module")
def svc():
    service = start_service()
    desktop = service.desktop
    # The main terminal: a plain shell with a short prompt, large font.
    desktop.xterm(geometry="80x16+0+0", font=FONT, command=["env", "PS1=$ ", "sh"], extra=["-T", "main"])
    wait_window(desktop, "main")
    recorder = Recorder()
    service.recorder = recorder
    try:
        yield service
    finally:
        service.stop()
        desktop.stop()
    # No password anywhere: not in any tool result of this module, not in the service's logs.
    assert recorder.texts
    assert not [t for t in recorder.texts if PASSWORD in t]
    assert PASSWORD not in service.log()


def sess(svc, **kw):
    return session(svc.cfg, svc.recorder, **kw)


async def clean_terminal(s):
    """Focus the main terminal and clear it, so each test starts from an empty screen."""
    await s.call("move_mouse", {"x": MAIN[0], "y": MAIN[1]})
    await s.call("type_text", {"text": "clear\n"})
    await s.call("wait_for", {"stable": True, "timeout_ms": 3000})


def decode_image(result):
    [image] = [c for c in result.content if c.type == "image"]
    data = base64.b64decode(image.data)
    img = Image.open(io.BytesIO(data))
    img.load()
    return image.mime_type, data, img


# -- the tool list --------------------------------------------------------------------------------
EXPECTED_TOOLS = {"screenshot", "read_text", "find_text", "click", "move_mouse", "drag", "scroll", "mouse_down",
                  "mouse_up", "press_key", "hold_key", "type_text", "wait_for", "changes", "get_clipboard",
                  "set_clipboard", "status"}


def test_tools_have_typed_parameters_and_annotations(svc):
    async def main():
        async with sess(svc) as s:
            tools = {t.name: t for t in (await s.client.list_tools()).tools}
        assert set(tools) == EXPECTED_TOOLS
        for name, tool in tools.items():
            assert "desktop" in tool.input_schema["properties"], name
            assert tool.description and tool.annotations is not None, name
            # read_text's result can be hundreds of lines: structured, but without a schema
            # for clients to validate it against on every call.
            assert (tool.output_schema is None) == (name == "read_text"), name
        for name in ("screenshot", "read_text", "find_text", "wait_for", "get_clipboard", "status"):
            assert tools[name].annotations.read_only_hint, name
        for name in ("click", "drag", "press_key", "type_text", "hold_key", "mouse_down", "mouse_up"):
            a = tools[name].annotations
            assert a.read_only_hint is False and a.destructive_hint, name
        click = tools["click"].input_schema["properties"]
        assert click["count"]["minimum"] == 1 and click["count"]["maximum"] == 3
        assert click["button"]["enum"] == ["left", "middle", "right"]
        shot = tools["screenshot"].input_schema
        assert set(re.findall(r"'(png|jpeg|webp)'", str(shot["properties"]["format"]))) == {"png", "jpeg", "webp"}
        assert set(re.findall(r"'(none|grid|marks)'", str(shot["properties"]["overlay"]))) == {"none", "grid", "marks"}
        assert tools["type_text"].input_schema["properties"]["text"]["maxLength"] == 5000
        assert tools["scroll"].input_schema["properties"]["direction"]["enum"] == ["up", "down", "left", "right"]
    run(main())


# -- screenshot ----------------------------------------------------------------------------------------
def test_screenshot_states_scale_and_size_and_maps_back_to_desktop_pixels(svc):
    desktop = svc.desktop
    marker = desktop.xterm(geometry="3x1+900+650", font=FONT, extra=["-T", "marker", "-bg", "red", "-fg", "red"])
    try:
        wx, wy, ww, wh = wait_window(desktop, "marker")

        async def main():
            async with sess(svc) as s:
                await s.call("wait_for", {"stable": True, "timeout_ms": 3000})
                full = await s.call("screenshot")
                mime, data, img = decode_image(full)
                meta = full.structured_content
                assert mime == "image/png" and img.size == (1024, 768) and meta["scale"] == 1
                assert "1024x768" in text_of(full) and "scale 1" in text_of(full)
                assert len(data) == meta["bytes"] <= 700_000

                half = await s.call("screenshot", {"max_width": 512, "max_height": 512})
                _, _, img = decode_image(half)
                meta = half.structured_content
                assert img.size == (512, 384) and meta["scale"] == 0.5
                assert (meta["desktop_width"], meta["desktop_height"]) == (1024, 768)
                assert "scale 0.5" in text_of(half) and "desktop x = 0 + image x * 2" in text_of(half).lower()
                # Where the red window is in the image, mapped back with the stated scale,
                # is where X says the window is.
                a = np.asarray(img.convert("RGB")).astype(int)
                ys, xs = np.nonzero((a[:, :, 0] > 200) & (a[:, :, 1] < 50) & (a[:, :, 2] < 50))
                cx, cy = xs.mean() / meta["scale"], ys.mean() / meta["scale"]
                assert abs(cx - (wx + ww / 2)) <= 2 and abs(cy - (wy + wh / 2)) <= 2

                # A region (zoom): origin and scale both stated and both right.
                zoom = await s.call("screenshot", {"region": {"x": wx - 20, "y": wy - 10, "width": 100, "height": 60},
                                                   "max_width": 50})
                _, _, img = decode_image(zoom)
                meta = zoom.structured_content
                assert img.size == (50, 30) and meta["region"] == {"x": wx - 20, "y": wy - 10, "width": 100,
                                                                   "height": 60}
                a = np.asarray(img.convert("RGB")).astype(int)
                ys, xs = np.nonzero((a[:, :, 0] > 200) & (a[:, :, 1] < 50) & (a[:, :, 2] < 50))
                assert abs(meta["region"]["x"] + xs.min() / meta["scale"] - wx) <= 2
                # The click lands where the image said.
                x, y = round(meta["region"]["x"] + xs.mean() / meta["scale"]), round(
                    meta["region"]["y"] + ys.mean() / meta["scale"])
                await s.call("move_mouse", {"x": x, "y": y})
                px, py = pointer_position(desktop)
                assert wx <= px < wx + ww and wy <= py < wy + wh
        run(main())
    finally:
        marker.terminate()


def test_screenshot_formats_overlays_and_byte_budget(svc):
    desktop = svc.desktop
    busy = desktop.xterm(geometry="100x36+0+0", font="fixed", extra=["-T", "busy", "-bg", "navy", "-fg", "yellow"],
                         command=["sh", "-c", "head -c 40000 /dev/urandom | base64 -w 98; sleep 600"])
    try:
        wait_window(desktop, "busy")

        async def main():
            async with sess(svc) as s:
                await s.call("wait_for", {"stable": True, "timeout_ms": 5000})
                for fmt, mime in (("jpeg", "image/jpeg"), ("webp", "image/webp"), ("png", "image/png")):
                    result = await s.call("screenshot", {"format": fmt})
                    got_mime, _, img = decode_image(result)
                    assert got_mime == mime and img.format.lower() == fmt
                # A budget the PNG of this busy screen cannot meet: met (as JPEG, or smaller), and
                # the result says how.
                png = await s.call("screenshot", {"format": "png"})
                assert png.structured_content["bytes"] > 60_000
                tight = await s.call("screenshot", {"max_bytes": 60_000})
                mime, data, img = decode_image(tight)
                meta = tight.structured_content
                assert len(data) == meta["bytes"] <= 60_000 and meta["notes"]
                assert mime == "image/jpeg" or img.size[0] < 1024
                assert ("JPEG" in text_of(tight)) == (mime == "image/jpeg")
                assert ("downscaled" in text_of(tight)) == (img.size[0] < 1024)
                assert meta["scale"] == img.size[0] / 1024
                # Grid: magenta lines and the step in desktop pixels.
                grid = await s.call("screenshot", {"overlay": "grid"})
                _, _, img = decode_image(grid)
                step = grid.structured_content["grid_step"]
                a = np.asarray(img.convert("RGB")).astype(int)
                magenta = (a[:, :, 0] > 200) & (a[:, :, 1] < 60) & (a[:, :, 2] > 200)
                assert step and magenta[:, step].sum() > 500 and f"every {step} desktop pixels" in text_of(grid)
        run(main())
    finally:
        busy.terminate()


def test_screenshot_argument_errors(svc):
    async def main():
        async with sess(svc) as s:
            await s.error("screenshot", {"region": {"x": 1000, "y": 0, "width": 100, "height": 10}},
                          "not inside the 1024x768 desktop", "x + width <= 1024")
            await s.error("screenshot", {"region": {"x": 0, "y": 0, "width": 0, "height": 10}},
                          "region.width", "greater than or equal to 1")
            await s.error("screenshot", {"max_width": 4}, "max_width", "greater than or equal to 16")
            await s.error("screenshot", {"format": "gif"}, "format", "'png', 'jpeg' or 'webp'")
            await s.error("screenshot", {"overlay": "boxes"}, "overlay", "'none', 'grid' or 'marks'")
            await s.error("screenshot", {"max_bytes": 10}, "max_bytes")
            await s.error("screenshot", {"desktop": "nope"}, "unknown desktop 'nope'", "configured desktops are default")
    run(main())


# -- reading text ---------------------------------------------------------------------------------------
def test_read_text_and_find_text(svc):
    async def main():
        async with sess(svc) as s:
            await clean_terminal(s)
            typed = await s.call("type_text", {"text": "echo Quokka 12345 Wombat\n"})
            # The input tool's own feedback already carries the new text.
            assert "Quokka 12345 Wombat" in text_of(typed)
            assert typed.structured_content["changed"] and typed.structured_content["regions"]

            result = await s.call("read_text")
            lines = result.structured_content["lines"]
            [out] = [l for l in lines if l["text"] == "Quokka 12345 Wombat"]
            x0, y0, x1, y1 = out["box"]
            assert 0 <= x0 < 30 and y0 > 10 and x1 - x0 > 150 and 10 < y1 - y0 < 30
            assert "Quokka 12345 Wombat" in result.structured_content["text"]
            assert "$ echo Quokka 12345 Wombat" in text_of(result)

            # a region: only the text in it
            upper = await s.call("read_text", {"region": {"x": 0, "y": 0, "width": 1024, "height": y0 - 2}})
            assert "Quokka 12345 Wombat" not in [l["text"] for l in upper.structured_content["lines"]]
            assert "echo" in upper.structured_content["text"]
            # confidence filter: nothing is 100 % sure
            assert (await s.call("read_text", {"min_confidence": 100})).structured_content["lines"] == []

            found = await s.call("find_text", {"text": "quokka 12345"})
            matches = found.structured_content["matches"]
            assert len(matches) == 2                                 # the command and its output
            m = matches[1]
            assert m["line"] == "Quokka 12345 Wombat" and m["text"] == "Quokka 12345"
            assert x0 <= m["box"][0] < m["click"][0] < m["box"][2] < x1
            assert y0 <= m["click"][1] < y1
            regex = await s.call("find_text", {"text": r"Wom\w+$", "regex": True})
            assert [m["text"] for m in regex.structured_content["matches"]] == ["Wombat", "Wombat"]
            in_region = await s.call("find_text", {"text": "Wombat",
                                                   "region": {"x": 0, "y": y0 - 2, "width": 1024, "height": 40}})
            assert len(in_region.structured_content["matches"]) == 1
            missing = await s.call("find_text", {"text": "Platypus"})
            assert missing.structured_content["matches"] == [] and "not on the screen" in text_of(missing)

            await s.error("find_text", {"text": ""}, "text", "at least 1 character")
            await s.error("find_text", {"text": "(", "regex": True}, "invalid regular expression")
            await s.error("find_text", {"text": "x" * 501}, "text", "at most 500 characters")
            await s.error("find_text", {"text": "a", "region": {"x": 0, "y": 700, "width": 10, "height": 100}},
                          "not inside")
            await s.error("read_text", {"min_confidence": 101}, "min_confidence", "less than or equal to 100")
            await s.error("read_text", {"region": {"x": -1, "y": 0, "width": 5, "height": 5}}, "region.x")
    run(main())


# -- clicking ---------------------------------------------------------------------------------------------
def test_click_a_real_button_by_its_label_and_by_a_mark(svc):
    desktop = svc.desktop

    # xmessage draws each button as a label in an oval outline, side by side.
    def dialog(buttons, message):
        proc = desktop.run_client(["xmessage", "-fn", FONT, "-geometry", "+600+420", "-buttons",
                                   buttons, message])
        wait_window(desktop, "xmessage")
        return proc

    async def main():
        async with sess(svc) as s:
            proc = await asyncio.to_thread(dialog, "Apply:12,Cancel:11", "Pick a button")
            await s.call("wait_for", {"text": "Cancel", "timeout_ms": 8000})
            result = await s.call("click", {"text": "cancel"})
            assert "on 'Cancel'" in text_of(result) and result.structured_content["changed"]
            assert await asyncio.to_thread(proc.wait, 10) == 11
            await s.call("wait_for", {"gone": "Cancel", "timeout_ms": 8000})

            proc = await asyncio.to_thread(dialog, "Continue:13", "Second dialog")
            await s.call("wait_for", {"text": "Continue", "timeout_ms": 8000})
            shot = await s.call("screenshot", {"overlay": "marks",
                                               "region": {"x": 560, "y": 380, "width": 400, "height": 200}})
            marks = shot.structured_content["marks"]
            [button] = [m for m in marks if m["text"].startswith("Continue")]
            assert f"[{button['number']}] Continue" in text_of(shot)
            assert all(560 <= m["click"][0] < 960 and 380 <= m["click"][1] < 580 for m in marks)
            _, _, img = decode_image(shot)
            assert img.size == (400, 200)
            result = await s.call("click", {"mark": button["number"]})
            assert f"on mark {button['number']} 'Continue" in text_of(result)
            assert await asyncio.to_thread(proc.wait, 10) == 13
    run(main())


def test_click_at_a_point_counts_buttons_and_errors(svc):
    desktop = svc.desktop

    async def main():
        async with sess(svc) as s:
            await s.error("click", {"mark": 1}, "no marks yet", "screenshot(overlay='marks')")
            await clean_terminal(s)
            await s.call("type_text", {"text": "echo Twin Twin\n"})
            found = (await s.call("find_text", {"text": "Twin"})).structured_content["matches"]
            assert len(found) == 4
            await s.error("click", {"text": "Twin"}, "on the screen 4 times", "match=N", "nothing was clicked")
            await s.error("click", {"text": "Twin", "match": 9}, "match=9", "match must be 1-4")
            result = await s.call("click", {"text": "twin", "match": 4})
            assert pointer_position(desktop) == tuple(found[3]["click"])
            assert f"clicked left at ({found[3]['click'][0]},{found[3]['click'][1]}) on 'Twin'" in text_of(result)
            # a double click selects a word (the X primary selection), a triple click the line:
            # count and position both right (xterm highlights the selection, so OCR no longer
            # sees these words the same way: the clicks use the positions found before)
            x, y = found[3]["click"]
            await asyncio.sleep(0.6)   # longer than xterm's multi-click time: a new click sequence
            result = await s.call("click", {"x": x, "y": y, "count": 2})
            assert f"double-clicked left at ({x},{y})" in text_of(result)
            assert await until(lambda: selection_is(desktop, "Twin"), 5), await x_selection(desktop)
            await asyncio.sleep(0.6)
            await s.call("click", {"x": found[2]["click"][0], "y": found[2]["click"][1], "count": 3})
            assert await until(lambda: selection_is(desktop, "Twin Twin\n"), 5), await x_selection(desktop)

            await s.error("click", {"text": "Platypus"}, "'Platypus' is not on the screen")
            await s.error("click", {}, "give exactly one target")
            await s.error("click", {"x": 5, "y": 5, "text": "Twin"}, "exactly one target", "x/y and text")
            await s.error("click", {"x": 5}, "give both x and y")
            await s.error("click", {"x": 5, "y": 5, "match": 1}, "match chooses among the matches of text")
            await s.error("click", {"x": 1024, "y": 5}, "outside the 1024x768 desktop", "x must be 0-1023")
            await s.error("click", {"x": -1, "y": 5}, "x: Input should be greater than or equal to 0")
            await s.error("click", {"x": 1, "y": 1, "count": 4}, "count", "less than or equal to 3")
            await s.error("click", {"x": 1, "y": 1, "button": "side"}, "button", "'left', 'middle' or 'right'")
            await s.error("click", {"x": 1, "y": 1, "modifiers": ["hyper"]}, "modifiers")
            await s.error("click", {"mark": 0}, "mark", "greater than or equal to 1")
            await s.call("screenshot", {"overlay": "marks", "region": {"x": 0, "y": 0, "width": 400, "height": 100}})
            await s.error("click", {"mark": 999}, "there is no mark 999", "marks 1-")
    run(main())


# -- pointer -----------------------------------------------------------------------------------------------
def test_move_drag_scroll_and_buttons(svc):
    desktop = svc.desktop

    async def main():
        async with sess(svc) as s:
            await s.error("mouse_down", {}, "pointer position is not known yet")
            result = await s.call("move_mouse", {"x": 321, "y": 123})
            assert pointer_position(desktop) == (321, 123) and "(321,123)" in text_of(result)
            await clean_terminal(s)
            await s.call("type_text", {"text": "echo DRAGME please\n"})
            [_, m] = (await s.call("find_text", {"text": "DRAGME"})).structured_content["matches"]
            x0, y0, x1, y1 = m["box"]
            cy = (y0 + y1) // 2
            # drag: xterm selects what the pointer swept
            # (xterm takes a character when the pointer passes its cell: end just after the word)
            await s.call("drag", {"start_x": x0 + 1, "start_y": cy, "end_x": x1 + 3, "end_y": cy})
            assert await until(lambda: selection_is(desktop, "DRAGME"), 5), await x_selection(desktop)
            # the same with mouse_down, move_mouse, mouse_up (the held button stays held)
            await s.call("click", {"x": 500, "y": 300})            # drop the selection
            await asyncio.sleep(0.6)                                # past xterm's multi-click time
            await s.call("mouse_down", {"x": x0 + 1, "y": cy})
            await s.call("move_mouse", {"x": (x0 + x1) // 2, "y": cy})
            await s.call("mouse_up", {"x": x1 + 3, "y": cy})
            assert await until(lambda: selection_is(desktop, "DRAGME"), 5), await x_selection(desktop)
            await s.call("mouse_down", {"button": "right"})
            await s.call("mouse_up", {"button": "right"})

            # scroll: xterm scrolls its history on the wheel
            await s.call("type_text", {"text": "seq 1 80\n"})
            await s.call("wait_for", {"text": "^80$", "regex": True, "timeout_ms": 8000})
            scrolled = await s.call("scroll", {"x": 300, "y": 150, "direction": "up", "amount": 10})
            assert scrolled.structured_content["changed"]
            numbers = [int(l["text"]) for l in (await s.call("read_text")).structured_content["lines"]
                       if l["text"].isdigit()]
            assert numbers and max(numbers) < 80
            await s.call("scroll", {"x": 300, "y": 150, "direction": "down", "amount": 30, "modifiers": ["shift"]})

            await s.error("move_mouse", {"x": 5000, "y": 0}, "outside the 1024x768 desktop")
            await s.error("move_mouse", {"x": 1}, "y: Field required")
            await s.error("drag", {"start_x": 0, "start_y": 0, "end_x": 10, "end_y": 768}, "end point (10, 768)")
            await s.error("scroll", {"x": 1, "y": 1, "direction": "sideways"}, "direction")
            await s.error("scroll", {"x": 1, "y": 1, "direction": "up", "amount": 0}, "amount")
            await s.error("scroll", {"x": 1, "y": 1, "direction": "up", "amount": 51}, "amount")
            await s.error("mouse_up", {"x": 3}, "give both x and y, or neither")
            await s.error("mouse_down", {"button": "fourth"}, "button")
    run(main())


# -- keyboard -----------------------------------------------------------------------------------------------
def test_type_any_unicode_and_keys(svc):
    desktop = svc.desktop
    out = os.path.join(desktop.workdir, "typed.txt")
    typist = desktop.xterm(geometry="60x3+0+560", font=FONT, extra=["-T", "typist"],
                           command=["sh", "-c", f"cat > {out}"])
    text = 'Grüße 日本 ÀB!@#$%^&*()_+{}|:"<>?~`é€ x\tTab\n'
    try:
        wait_window(desktop, "typist")

        async def main():
            async with sess(svc) as s:
                await s.call("move_mouse", {"x": 100, "y": 590})
                result = await s.call("type_text", {"text": text})
                assert result.structured_content["changed"]
                await s.call("type_text", {"text": "second line"})
                await s.call("press_key", {"keys": "BackSpace BackSpace Return"})
                await s.call("hold_key", {"keys": "shift", "ms": 150})
                await s.call("type_text", {"text": "lower\n"})
                await s.call("press_key", {"keys": "ctrl+d"})   # end of input: cat exits
                assert await until(lambda: typist.poll() is not None, 10)

                await s.error("press_key", {"keys": "ctrl+nosuchkey"}, "unknown key 'nosuchkey'", "X11 keysym name")
                await s.error("press_key", {"keys": ""}, "keys", "at least 1 character")
                await s.error("press_key", {"keys": "   "}, "keys is empty")
                await s.error("hold_key", {"keys": "a b", "ms": 100}, "one key or combination")
                await s.error("hold_key", {"keys": "a", "ms": 0}, "ms", "greater than or equal to 1")
                await s.error("hold_key", {"keys": "a", "ms": 10_001}, "ms", "less than or equal to 10000")
                await s.error("type_text", {"text": ""}, "text", "at least 1 character")
                await s.error("type_text", {"text": "x" * 5001}, "at most 5000 characters", "got 5001 characters")
                await s.error("type_text", {"text": "bell\x07"}, "character 5", "U+0007")
        run(main())
        with open(out, encoding="utf-8") as f:
            assert f.read() == text + "second li\n" + "lower\n"
    finally:
        typist.terminate()


# -- waiting and changes ----------------------------------------------------------------------------------
def test_wait_for_text_gone_change_stable(svc):
    async def main():
        async with sess(svc) as s:
            await clean_terminal(s)
            await s.call("type_text", {"text": "sleep 1.5; echo READY-$((40+2))\n"})
            t0 = time.monotonic()
            result = await s.call("wait_for", {"text": "READY-42", "timeout_ms": 15000})
            waited = time.monotonic() - t0
            assert result.structured_content["met"] and 0.8 < waited < 8
            assert result.structured_content["matches"][0]["text"] == "READY-42"

            await s.call("type_text", {"text": "sleep 1; clear\n"})
            result = await s.call("wait_for", {"gone": "READY-42", "timeout_ms": 15000})
            assert result.structured_content["met"]

            await s.call("type_text", {"text": "sleep 1; echo changed\n"})
            await s.call("wait_for", {"stable": True, "timeout_ms": 5000})
            result = await s.call("wait_for", {"change": True, "timeout_ms": 10000,
                                               "region": {"x": 0, "y": 0, "width": 1024, "height": 200}})
            assert result.structured_content["met"] and result.structured_content["regions"]

            t0 = time.monotonic()
            result = await s.call("wait_for", {"text": "never-there", "timeout_ms": 400})
            assert not result.structured_content["met"] and "NOT met" in text_of(result)
            assert time.monotonic() - t0 < 3
            assert (await s.call("wait_for", {"stable": True, "timeout_ms": 5000})).structured_content["met"]

            await s.error("wait_for", {}, "give exactly one condition")
            await s.error("wait_for", {"text": "a", "change": True}, "exactly one condition", "text, change")
            await s.error("wait_for", {"text": "(", "regex": True}, "invalid regular expression")
            await s.error("wait_for", {"change": True, "region": {"x": 2000, "y": 0, "width": 1, "height": 1}},
                          "not inside")
            await s.error("wait_for", {"stable": True, "timeout_ms": 60_001}, "timeout_ms")
    run(main())


def test_changes_since_last_look(svc):
    async def main():
        async with sess(svc) as s:
            await clean_terminal(s)
            nothing = await s.call("changes")
            assert not nothing.structured_content["changed"] and "Nothing changed" in text_of(nothing)
            version = nothing.structured_content["version"]
            # something changes that nobody reported yet (a delayed command)
            await s.call("type_text", {"text": "sleep 1; echo Kookaburra\n"})
            await s.call("wait_for", {"text": "^Kookaburra$", "regex": True, "timeout_ms": 10000})
            result = await s.call("changes")
            assert result.structured_content["changed"] and "Kookaburra" in text_of(result)
            assert any(l["text"] == "Kookaburra" for l in result.structured_content["text"])
            assert not (await s.call("changes")).structured_content["changed"]
            again = await s.call("changes", {"since": version})
            assert again.structured_content["changed"] and "Kookaburra" in text_of(again)
            await s.error("changes", {"since": 10**9}, "ahead of the screen", "the current version is")
            await s.error("changes", {"since": -1}, "since")
    run(main())


# -- clipboard and status -------------------------------------------------------------------------------------
def test_clipboard_round_trip(svc):
    desktop = svc.desktop

    async def main():
        async with sess(svc) as s:
            text = "vncmcp ✓ clipboard — Grüße"
            result = await s.call("set_clipboard", {"text": text})
            assert result.structured_content["length"] == len(text)
            assert await until(lambda: selection_is(desktop, text, "clipboard"), 10)
            owner = desktop.run_client(["xclip", "-quiet", "-i", "-selection", "clipboard"],
                                       stdin=__import__("subprocess").PIPE)
            owner.stdin.write("from X: naïve 日本".encode())
            owner.stdin.close()

            async def got():
                return (await s.call("get_clipboard")).structured_content["text"] == "from X: naïve 日本"
            assert await until(got, 10)
            await s.error("set_clipboard", {"text": "x" * 100_001}, "text", "at most 100000 characters")
    run(main())


def test_status_and_named_desktops(svc):
    from broker.config import DesktopConfig
    cfg = svc.cfg
    cfg.desktops["lab"] = DesktopConfig(name="lab", host="127.0.0.1", port=1)   # no worker runs for it

    async def main():
        async with session(cfg, svc.recorder, ready=False) as s:
            assert await s.fe.link("default").mirror.wait_first_frame(15)
            status = await s.call("status")
            entries = {d["desktop"]: d for d in status.structured_content["desktops"]}
            main_entry = entries["default"]
            assert main_entry["connected"] and (main_entry["width"], main_entry["height"]) == (1024, 768)
            assert main_entry["ocr"]["available"] and main_entry["ocr"]["source"] == "broker"
            assert main_entry["version"] >= 1 and main_entry["frame_age_s"] is not None
            assert not entries["lab"]["connected"] and entries["lab"]["state"] == "no worker"
            assert "lab: no worker" in text_of(status)
            one = await s.call("status", {"desktop": "default"})
            assert [d["desktop"] for d in one.structured_content["desktops"]] == ["default"]
            await s.call("move_mouse", {"x": 7, "y": 8, "desktop": "default"})
            assert (await s.call("status", {"desktop": "default"})).structured_content["desktops"][0]["cursor"] == [7, 8]
            await s.error("screenshot", {"desktop": "lab"}, "desktop lab: no VNC worker answers")
            await s.error("click", {"x": 1, "y": 1, "desktop": "lab"}, "desktop lab")
            await s.error("status", {"desktop": "attic"}, "unknown desktop 'attic'",
                          "configured desktops are default, lab")
    run(main())


def test_disconnected_desktop_answers_stale_and_reconnects():
    from broker.demo import start_xvnc
    service = start_service(password=None)
    desktop = service.desktop
    desktop.xterm(geometry="40x5+0+0", font=FONT, command=["sh", "-c", "echo Before the outage; sleep 600"])

    async def main():
        nonlocal desktop
        async with session(service.cfg) as s:
            await s.call("wait_for", {"text": "outage", "timeout_ms": 10000})
            port, display = desktop.port, desktop.display
            desktop.stop()

            async def disconnected():
                status = await s.call("status")
                return not status.structured_content["desktops"][0]["connected"]
            assert await until(disconnected, 15)

            shot = await s.call("screenshot")
            assert shot.structured_content["stale"]
            assert re.match(r"STALE: desktop default is disconnected since \d\d:\d\d:\d\d.*, reconnecting; "
                            r"this is the last frame received", text_of(shot))
            assert decode_image(shot)[2].size == (1024, 768)
            text = await s.call("read_text")
            assert text.structured_content["stale"] and "Before the outage" in text_of(text)
            assert text_of(text).startswith("STALE: desktop default is disconnected since")
            for tool, args in (("click", {"x": 1, "y": 1}), ("type_text", {"text": "x"}),
                               ("press_key", {"keys": "Return"}), ("set_clipboard", {"text": "x"}),
                               ("wait_for", {"change": True})):
                message = await s.error(tool, args, "desktop default is disconnected since", "reconnecting")
                assert re.search(r"since \d\d:\d\d:\d\d", message)

            # The same server comes back (a new session, another size): the worker
            # reconnects by itself and the mirror takes the new session's frame.
            desktop = await asyncio.to_thread(start_xvnc, "800x600", "None", None, port, None, display)

            async def connected():
                status = await s.call("status")
                entry = status.structured_content["desktops"][0]
                return entry["connected"] and entry["width"] == 800
            assert await until(connected, 20)
            shot = await s.call("screenshot")
            assert not shot.structured_content["stale"] and "STALE" not in text_of(shot)
            assert decode_image(shot)[2].size == (800, 600)
            await s.call("move_mouse", {"x": 799, "y": 599})
            await s.error("move_mouse", {"x": 800, "y": 0}, "outside the 800x600 desktop")
    try:
        run(main())
    finally:
        service.stop()
        desktop.stop()


def test_without_ocr_text_tools_say_so_and_input_still_works(svc):
    from mcp_frontend.ocr import NoText

    async def main():
        async with sess(svc, text_source=NoText("no broker in this test")) as s:
            for tool, args in (("read_text", {}), ("find_text", {"text": "a"}), ("click", {"text": "a"}),
                               ("wait_for", {"text": "a"}), ("screenshot", {"overlay": "marks"})):
                await s.error(tool, args, "OCR unavailable: no broker in this test")
            await s.call("move_mouse", {"x": MAIN[0], "y": MAIN[1]})
            typed = await s.call("type_text", {"text": "echo no ocr\n"})
            assert typed.structured_content["changed"] and typed.structured_content["text"] is None
            assert "OCR unavailable: no broker in this test" in text_of(typed)
            status = await s.call("status")
            assert status.structured_content["desktops"][0]["ocr"]["available"] is False
            assert "OCR OCR unavailable" not in text_of(status) and "no broker in this test" in text_of(status)
    run(main())


def test_audit_log_records_every_input_call(svc, tmp_path):
    import json
    from broker import config
    log_path = tmp_path / "audit" / "audit.jsonl"
    cfg = config.load(None, dict(svc.env, VNCMCP_AUDIT_LOG=str(log_path)))
    clear = config.load(None, dict(svc.env, VNCMCP_AUDIT_LOG=str(log_path), VNCMCP_AUDIT_REDACT_TEXT="false"))

    async def main():
        async with session(cfg) as s:
            await s.call("move_mouse", {"x": MAIN[0], "y": MAIN[1]})
            await s.call("type_text", {"text": "echo secret-typed-words\n"})
            await s.call("screenshot", {"max_width": 64})          # reading: not audited
            await s.error("click", {"x": 99999, "y": 5}, "x")      # refused: audited with its error
            await s.call("set_clipboard", {"text": "clip-text"})
        async with session(clear) as s:
            await s.call("press_key", {"keys": "ctrl+c"})
            await s.call("type_text", {"text": "kept\n"})
    run(main())
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["tool"] for e in entries] == ["move_mouse", "type_text", "click", "set_clipboard", "press_key",
                                            "type_text"]
    assert all(e["desktop"] == "default" and e["pid"] == os.getpid() and e["ms"] >= 0 for e in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in entries)
    assert entries[0]["arguments"] == {"x": MAIN[0], "y": MAIN[1], "desktop": "default"} and entries[0]["result"] == "ok"
    assert entries[1]["arguments"]["text"] == "<redacted: 24 characters>"
    assert entries[2]["result"].startswith("error: ") and "99999" in entries[2]["result"]
    assert entries[3]["arguments"]["text"] == "<redacted: 9 characters>"
    assert entries[5]["arguments"]["text"] == "kept\n"
    text = log_path.read_text()
    assert "secret-typed-words" not in text and "clip-text" not in text
    assert oct(log_path.stat().st_mode & 0o777) == "0o600"
