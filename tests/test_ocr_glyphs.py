"""The glyph table (workers/ocr_glyphs.py): monospace terminal lines spelled from glyphs
learned off Tesseract's readings. The logic tests teach it the true words of lines drawn
in xterm's own bitmap fonts; the last test lets real Tesseract teach it."""
import collections
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.test_ocr_engine_screen import bitmap_font
from workers import ocr_engine
from workers.ocr_glyphs import GlyphTable

PITCH = 8          # the 8x13 font's cell width
LINE_STEP = 20


@dataclass
class Reading:     # what learn() takes from Tesseract: text, screen box, confidence
    text: str
    box: tuple
    conf: float = 95.0


@pytest.fixture(scope="module")
def font8x13(tmp_path_factory):
    return bitmap_font("8x13", tmp_path_factory.mktemp("font"))


def terminal(lines, font, dark=False, cursor_after=None):
    """Lines drawn cell by cell as xterm does, and each line's true words with their
    cell boxes."""
    bg, fg = (0, 255) if dark else (255, 0)
    image = Image.new("L", (PITCH * 60 + 20, LINE_STEP * len(lines) + 20), bg)
    draw = ImageDraw.Draw(image)
    truth = []
    for row, text in enumerate(lines):
        x0, y = 10, 10 + row * LINE_STEP
        draw.text((x0, y), text, font=font, fill=fg)
        if cursor_after is not None and row == cursor_after:
            cx = x0 + PITCH * (len(text) + 1)
            draw.rectangle((cx, y, cx + PITCH - 1, y + 12), fill=fg)
        words, col = [], 0
        for word in text.split(" "):
            if word:
                words.append(Reading(word, (x0 + col * PITCH, y, x0 + (col + len(word)) * PITCH, y + 13)))
            col += len(word) + 1
        truth.append(words)
    return np.asarray(image), truth


def line_boxes(gray):
    boxes = ocr_engine.find_text_lines(gray)
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def teach(table, gray, truth):
    return [table.learn(gray, box, words) for box, words in zip(line_boxes(gray), truth)]


def spelled(table, gray, row):
    found = table.decode(gray, line_boxes(gray)[row])
    return None if found is None else [text for text, _, _ in found]


LESSON = ["user@host:~/src$ make test", "make: Entering directory", "user@host:~/src$ git status",
          "On branch main, all tests passed", "user@host:~/src$ make test"]


def test_a_line_of_known_glyphs_is_spelled_with_its_words_in_place(font8x13):
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(LESSON, font8x13)
    assert all(teach(table, gray, truth))
    new, new_truth = terminal(["make status", "git main tests"], font8x13)
    for row in range(2):
        found = table.decode(new, line_boxes(new)[row])
        assert [t for t, _, _ in found] == [w.text for w in new_truth[row]]
        for (_, box, _), true in zip(found, new_truth[row]):
            # the ink of the word, inside its cells
            assert true.box[0] <= box[0] < box[2] <= true.box[2] and true.box[1] <= box[1] < box[3] <= true.box[3]


def test_reverse_video_and_a_block_cursor_spell_the_same(font8x13):
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(LESSON, font8x13)
    teach(table, gray, truth)
    new, _ = terminal(["user@host:~/src$ make"], font8x13, dark=True, cursor_after=0)
    assert spelled(table, new, 0) == ["user@host:~/src$", "make"]


def test_a_glyph_seen_once_or_never_leaves_the_line_to_tesseract(font8x13):
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(LESSON, font8x13)
    teach(table, gray, truth)
    # 'E' and 'y' were read once ("Entering directory"), 'Q' never.
    new, _ = terminal(["make Entering", "test Q", "main story"], font8x13)
    assert [spelled(table, new, row) for row in range(3)] == [None, None, None]


@pytest.mark.parametrize("text", ["Will it fit a grid of cells in any way at all", "Inbox (12)",
                                  "Spaces: 4", "Size 356 KB"])
def test_proportional_text_is_never_learned(text):
    """Not a long line, and not a short one that could fit a grid by chance but has spaces
    narrower than a character (learned, it would later be spelled "Inbox(12)")."""
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 14)
    image = Image.new("L", (600, 40), 255)
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), text, font=font, fill=0)
    gray = np.asarray(image)
    words, x = [], 10
    for word in text.split():
        width = draw.textlength(word, font=font)
        words.append(Reading(word, (int(x), 10, int(x + width) + 1, 27)))
        x += draw.textlength(word + " ", font=font)
    table = GlyphTable(ocr_engine.MARGIN)
    assert not table.learn(gray, line_boxes(gray)[0], words)
    assert len(table) == 0


def test_a_reading_with_the_wrong_number_of_characters_teaches_nothing(font8x13):
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(["hello world"], font8x13)
    hello, world = truth[0]
    assert not table.learn(gray, line_boxes(gray)[0], [Reading("helo", hello.box), world])
    assert not table.learn(gray, line_boxes(gray)[0], [Reading("hello", hello.box)])   # 'world' unread
    assert table.learn(gray, line_boxes(gray)[0], [hello, world])


def test_a_shape_read_two_ways_waits_for_a_clear_majority(font8x13):
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(["main.py main.py"] * 6, font8x13)
    box = line_boxes(gray)[0]
    misread = [Reading("main,py", w.box) for w in truth[0]]     # the dot read as a comma
    for _ in range(2):
        table.learn(gray, box, misread)
    assert spelled(table, gray, 1) is None       # two lines, but one word: it may be misread
    table.learn(gray, box, misread)               # the same way wherever it is
    assert spelled(table, gray, 1) == ["main,py", "main,py"]     # three votes, no dissent
    for _ in range(3):
        table.learn(gray, box, truth[0])
    assert spelled(table, gray, 1) is None                      # 3 to 3: undecided
    for _ in range(7):
        table.learn(gray, box, truth[0])
    assert spelled(table, gray, 1) == ["main.py", "main.py"]     # 10 to 3


def test_one_reading_of_a_line_is_one_vote_however_often_its_glyphs_repeat(font8x13):
    """A misreading of a line that holds the glyph four times is still one misreading: it
    is not trusted (nor is '.', in "10.0.0.1" read with commas twice in one line)."""
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(["make test make test", "10.0.0.1 10.0.0.1", "make test make test"], font8x13)
    assert table.learn(gray, line_boxes(gray)[0], [Reading(w.text.replace("a", "o"), w.box) for w in truth[0]])
    assert table.learn(gray, line_boxes(gray)[1], [Reading(w.text.replace(".", ","), w.box) for w in truth[1]])
    assert [spelled(table, gray, row) for row in range(3)] == [None, None, None]
    assert table.learn(gray, line_boxes(gray)[2], truth[2])     # a second line, read right: still 1 to 1
    assert spelled(table, gray, 0) is None


def test_two_readings_of_a_glyph_in_two_words_are_enough(font8x13):
    """'.' read once in "ab.cd" and once in "xy.ab" is trusted; read in two lines, both
    times in "ab.cd", it is not yet (xterm's 10x20 "1,249.99" was read "1.249.99" on two
    lines), in three it is."""
    gray, truth = terminal(["ab.cd abxy", "ab.cd xyab", "cdcd xy.ab", "ab.xy"], font8x13)
    same_word, two_words = GlyphTable(ocr_engine.MARGIN), GlyphTable(ocr_engine.MARGIN)
    for row in (0, 1):          # every glyph but '.' is read in two words
        assert same_word.learn(gray, line_boxes(gray)[row], truth[row])
    for row in (0, 2):
        assert two_words.learn(gray, line_boxes(gray)[row], truth[row])
    assert spelled(same_word, gray, 3) is None
    assert spelled(two_words, gray, 3) == ["ab.xy"]
    same_word.learn(gray, line_boxes(gray)[0], truth[0])          # a third line, the same word
    assert spelled(same_word, gray, 3) == ["ab.xy"]


def test_a_word_too_faint_to_count_as_ink_keeps_the_line_from_being_spelled(font8x13):
    """Grey text beside white on black (a dim or coloured word in a terminal) is below the
    line's ink threshold: the table must not spell the line with that word missing."""
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(LESSON, font8x13, dark=True)
    teach(table, gray, truth)
    image = Image.new("L", (400, 40), 0)
    draw = ImageDraw.Draw(image)
    for col, (word, grey) in zip((0, 5, 12), (("make", 255), ("status", 90), ("test", 255))):
        draw.text((10 + col * PITCH, 10), word, font=font8x13, fill=grey)
    dim = np.asarray(image)
    assert spelled(table, dim, 0) is None
    bright, _ = terminal(["make status test"], font8x13, dark=True)
    assert spelled(table, bright, 0) == ["make", "status", "test"]


def test_a_bar_above_or_on_the_baseline_is_placed_by_its_neighbours():
    """'-' and '_' drawn as the same bar at two heights: one shape, two readings; the rest
    of the line fixes the baseline and so which one it is; so do bars at two heights; bars
    at one height alone could be either, and are refused."""
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 13)
    table = GlyphTable(ocr_engine.MARGIN)

    def draw_line(cells):
        image = Image.new("L", (400, 30), 255)
        draw = ImageDraw.Draw(image)
        readings = []
        for i, c in enumerate(cells):
            x = 10 + 9 * i
            if c in "-_":
                y = 17 if c == "-" else 22          # the same 6x1 bar, mid-line or on the baseline
                draw.rectangle((x + 1, y, x + 6, y), fill=0)
            elif c != " ":
                draw.text((x, 8), c, font=font, fill=0)
        col = 0
        for word in cells.split(" "):
            if word:
                readings.append(Reading(word, (10 + 9 * col, 8, 10 + 9 * (col + len(word)), 25)))
            col += len(word) + 1
        # The box of the cells (line finding sees no line in bars alone).
        return np.asarray(image), (10, 8, 10 + 9 * len(cells), 25), readings

    for text in ("ab-cd ab_cd", "cd_ab cd-ab", "ab-cd ab_cd"):
        gray, box, readings = draw_line(text)
        assert table.learn(gray, box, readings)
    for text in ("cd-cd", "ab_ab", "dc_ba-ab", "--- ___"):
        gray, box, _ = draw_line(text)
        assert [t for t, _, _ in table.decode(gray, box)] == text.split()
    for text in ("---", "___"):
        gray, box, _ = draw_line(text)
        assert table.decode(gray, box) is None


def test_tesseract_teaches_the_table_on_a_terminal_screen(font8x13):
    """Real Tesseract on a screenful of an xterm in 8x13: later lines are spelled from what
    it read in earlier ones, and the words come out at least as right as Tesseract's own."""
    lines = [f"{name} {size} user staff Mar {day} {name}.log done"
             for name, size, day in [("alpha", 4096, 11), ("beta", 512, 12), ("gamma", 1830, 13),
                                     ("delta", 9216, 14), ("alpha", 2048, 15), ("beta", 4096, 16),
                                     ("gamma", 512, 17), ("delta", 1830, 18), ("alpha", 9216, 19),
                                     ("beta", 2048, 21), ("gamma", 4096, 22), ("delta", 512, 23)]]
    gray, truth = terminal(lines, font8x13)
    expected = collections.Counter(w.text for words in truth for w in words)

    def recall(reader):
        got = collections.Counter(w.text for w in ocr_engine.read_screen(reader, gray))
        return sum((expected & got).values()) / sum(expected.values())

    with_table = ocr_engine.LineReader()
    assert recall(with_table) >= recall(ocr_engine.LineReader(glyph_table=False))
    assert with_table.glyphs.learned >= 2
    assert with_table.glyphs.decoded >= len(lines) // 3


def test_anti_aliased_glyphs_that_spill_into_the_next_cell_are_learned():
    """DejaVu Sans Mono drawn cell by cell as xterm draws an Xft font (9 px cells: its
    8.4 px advance rounded up): the faint edge of a 'w' or an 'm' reaches into its
    neighbours' cells, which must not stop the split."""
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 14)

    def draw_lines(lines):
        image = Image.new("L", (400, 20 * len(lines) + 20), 30)
        draw = ImageDraw.Draw(image)
        truth = []
        for row, text in enumerate(lines):
            y = 10 + 20 * row
            for i, c in enumerate(text):
                draw.text((10 + 9 * i, y), c, font=font, fill=230)
            words, col = [], 0
            for word in text.split(" "):
                if word:
                    words.append(Reading(word, (10 + 9 * col, y, 10 + 9 * (col + len(word)), y + 17)))
                col += len(word) + 1
            truth.append(words)
        return np.asarray(image), truth

    gray, truth = draw_lines(["drwxr-xr-x www mmm", "-rw-r--r-- wmw rwx", "drwxr-xr-x www mmm"])
    table = GlyphTable(ocr_engine.MARGIN)
    assert all(teach(table, gray, truth))
    new, _ = draw_lines(["mmm rwx -rw-r--r--"])
    assert spelled(table, new, 0) == ["mmm", "rwx", "-rw-r--r--"]


def test_what_one_table_learned_teaches_another_through_plain_data(font8x13):
    """The OCR workers share what their tables learn (the broker relays take_shared()'s
    records as msgpack): the second table spells what only the first was taught, counts
    the readings as its own votes, and skips records that are not well formed."""
    from broker import wire
    first, second = GlyphTable(ocr_engine.MARGIN), GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(LESSON, font8x13)
    teach(first, gray, truth)
    shared = wire.unpack(wire.pack(first.take_shared()))
    assert len(shared) == len(LESSON) and first.take_shared() == []      # taken once
    new, _ = terminal(["make status", "test Q"], font8x13)
    assert spelled(second, new, 0) is None
    bad_votes = [[b"1,1:x", "ab", 0, 90.0, "ab"], ["1,1:x", "a", 0, 90.0, "a"], [b"1,1:x", "a", 0, float("nan"), "a"],
                 [b"1,1:" + bytes(4096), "a", 0, 90.0, "a"], [b"1,1:x", "a", 0.5, 90.0, "a"], [b"1,1:x", "a", 0, 90.0]]
    garbage = [None, [3, []], [8, "xyz"], [99, shared[0][1]]] + [[8, [vote]] for vote in bad_votes]
    assert second.absorb(garbage) == 0 and len(second) == 0           # nothing of it counted
    assert second.absorb(shared[:2]) == 2
    assert spelled(second, new, 0) is None                   # 'u' read once so far ("user")
    assert second.absorb(shared[2:]) == len(LESSON) - 2
    assert spelled(second, new, 0) == ["make", "status"]
    assert spelled(second, new, 1) is None                   # 'Q' was never read
    assert second.take_shared() == []                        # what it was taught is not passed on again


def test_a_wrong_glyph_is_outvoted_by_the_lines_left_to_tesseract_now_and_then(font8x13):
    """A table taught a misreading ('.' as ',', in three lines) still leaves one line in
    RECHECK_EVERY to Tesseract; its right readings win the vote, and the line is spelled
    right from then on."""
    from workers import ocr_glyphs
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(["main.py main.py"] * 2, font8x13)
    box = line_boxes(gray)[0]
    for _ in range(3):
        table.learn(gray, box, [Reading("main,py", w.box) for w in truth[0]])
    answers = []
    for _ in range(ocr_glyphs.RECHECK_EVERY * 8):
        found = table.decode(gray, box)
        if found is None:                  # what read_line does: Tesseract reads it, and teaches
            table.learn(gray, box, truth[0])
            answers.append(None)
        else:
            answers.append(" ".join(t for t, _, _ in found))
    assert answers[0] == "main,py main,py"
    assert answers[-1] == "main.py main.py"
    assert table.rechecked >= 1 and table.decoded > 0.9 * len(answers)


def test_a_line_mostly_known_has_only_its_unknown_word_read_by_tesseract(font8x13):
    """A line of known glyphs but for one word ('Q', 'j' and 'z' never seen) is spelled
    but for that word, which real Tesseract reads together with the nearest spelled word
    that shows how tall the font is; the words come out right, and Tesseract's reading
    of them (not the table's own spelling) is what the table learns from."""
    reader = ocr_engine.LineReader()
    gray, truth = terminal(LESSON, font8x13)
    teach(reader.glyphs, gray, truth)
    line, _ = terminal(["make status Qjzz main test"], font8x13)
    box = line_boxes(line)[0]
    widths = []
    read_crop = reader.read_crop
    reader.read_crop = lambda crop: widths.append(crop.shape[1]) or read_crop(crop)
    learned = reader.glyphs.learned
    words = ocr_engine.read_line(reader, line, box)
    assert [w.text for w in words] == ["make", "status", "Qjzz", "main", "test"]
    assert reader.glyphs.partly == 1 and len(widths) == 1
    # "status Qjzz" (the nearest tall glyph is status's 't'), upscaled as a 13 px line is.
    assert widths[0] < 0.6 * (box[2] - box[0]) * ocr_engine.upscale_for(box[3] - box[1])
    assert reader.glyphs.learned == learned + 1
    assert {vote[4] for vote in reader.glyphs.take_shared()[-1][1]} <= {"status", "Qjzz"}   # only what Tesseract read


def test_tesseracts_words_of_a_run_are_made_to_fit_the_terminals_blank_cells():
    """Given a few words alone, Tesseract may split one at a '.' ("README" ".md"), drop
    one, or run two together: split words are joined by the cells, and the others leave
    the line to be read whole (None)."""
    W = ocr_engine.Word
    spans = [(10, 82), (98, 130)]          # "README.md" and "main"
    got = ocr_engine._as_cell_words([W("README", (10, 0, 58, 9), 90), W(".md", (59, 0, 82, 9), 80),
                                     W("main", (98, 0, 130, 9), 95)], spans)
    assert [(w.text, w.box, w.conf) for w in got] == [("README.md", (10, 0, 82, 9), 80), ("main", (98, 0, 130, 9), 95)]
    assert ocr_engine._as_cell_words([W("README.md", (10, 0, 82, 9), 90)], spans) is None          # 'main' dropped
    assert ocr_engine._as_cell_words([W("README.mdmain", (10, 0, 130, 9), 90)], spans) is None      # run together
    assert ocr_engine._as_cell_words([W(".", (82, 0, 84, 9), 90), W("README", (10, 0, 58, 9), 90),
                                      W("main", (98, 0, 130, 9), 95)], spans)[0].text == "README."  # a pixel out


def test_marks_alone_are_not_enough_to_spell_a_line_in_part(font8x13):
    """Dots and dashes that the table knows could be anything (the ticks of a clock, a
    rule): a line whose spelled part would be only marks is left whole to Tesseract."""
    table = GlyphTable(ocr_engine.MARGIN)
    gray, truth = terminal(["a.b-c a.b-c", "d.e-f d.e-f", "- . - . - . - . Qjz"], font8x13)
    for row in (0, 1):
        table.learn(gray, line_boxes(gray)[row], truth[row])
    assert table.spell(gray, line_boxes(gray)[2]) is None


def test_a_run_that_tesseract_reads_nothing_of_sends_the_whole_line_to_it(font8x13):
    """If Tesseract returns nothing for a run (or drops a word of it as an icon), the
    words the table spelled for context are not lost: the line is read whole."""
    reader = ocr_engine.LineReader()
    gray, truth = terminal(LESSON, font8x13)
    teach(reader.glyphs, gray, truth)
    line, _ = terminal(["make status Qjzz main test"], font8x13)
    widths = []
    read_crop = reader.read_crop

    def first_read_empty(crop):
        widths.append(crop.shape[1])
        return [] if len(widths) == 1 else read_crop(crop)
    reader.read_crop = first_read_empty
    words = ocr_engine.read_line(reader, line, line_boxes(line)[0])
    assert [w.text for w in words] == ["make", "status", "Qjzz", "main", "test"]
    assert len(widths) == 2 and widths[1] > widths[0]
