"""OCR pipeline benchmark on the sample screens (../shared/ocr-samples), one process.

    .venv/bin/python bench/bench_ocr.py [--runs 5]

Prints per screen: line finding; cold OCR (empty line cache) with a new glyph table (nothing
learned), with the glyph table of an earlier read of the screen (its terminal fonts known)
and with no glyph table (Tesseract for every line), side by side; the columns of line crops
handed to Tesseract in each case (its work, free of the machine's noise); unchanged frame (warm
cache); word recall and located-correct (workers/ocr_scoring.py); and the typing_f1 ->
typing_f2 step (one typed line) with a warm cache.
The service figures (broker + 1 vs 2 worker processes, live desktop, typed line, unchanged
frame, RSS) are in bench/bench_ocr_live.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from workers import ocr_engine, ocr_scoring  # noqa: E402
from workers.ocr_glyphs import GlyphTable  # noqa: E402

SAMPLES = os.path.join(ROOT, "..", "shared", "ocr-samples")


def load(name):
    image = np.asarray(Image.open(os.path.join(SAMPLES, f"{name}.png")).convert("RGB"))
    with open(os.path.join(SAMPLES, f"{name}.json")) as f:
        return ocr_engine.to_gray(image), json.load(f)["words"]


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def count_columns(reader) -> list[int]:
    """Columns of the line crops `reader` hands Tesseract, counted in [0]: its work,
    free of the machine's noise."""
    counter = [0]
    read_crop = reader.read_crop

    def counted(crop):
        counter[0] += crop.shape[1]
        return read_crop(crop)
    reader.read_crop = counted
    return counter


def tesseract_columns(reader, tesseract_only, gray) -> tuple[int, int, int]:
    """Columns sent to Tesseract reading the screen with no glyph table, with a new one,
    and a second time with what the first read taught it."""
    out = []
    for who, new_table in ((tesseract_only, False), (reader, True), (reader, False)):
        if new_table:
            who.glyphs = GlyphTable(ocr_engine.MARGIN)
        counter = who.counter
        before = counter[0]
        ocr_engine.read_screen(who, gray, ocr_engine.LineCache())
        out.append(counter[0] - before)
    return tuple(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    reader = ocr_engine.LineReader()
    tesseract_only = ocr_engine.LineReader(glyph_table=False)
    reader.counter, tesseract_only.counter = count_columns(reader), count_columns(tesseract_only)

    def cold_new_table():
        reader.glyphs = GlyphTable(ocr_engine.MARGIN)
        ocr_engine.read_screen(reader, gray, ocr_engine.LineCache())

    print(f"# vncmcp OCR benchmark, 1 process, tesserocr {__import__('tesserocr').tesseract_version().split()[1]}")
    print("cold: new glyph table / fonts known / no glyph table (ratio new:none)")
    for name in ("desk_mixed", "synth_ui", "typing_f1", "typing_f2"):
        gray, truth = load(name)
        lines_ms = median_ms(lambda: ocr_engine.find_text_lines(gray), args.runs)
        cold_runs = max(3, args.runs // 2)
        none_ms, cold_ms, known_ms = [], [], []
        for _ in range(cold_runs):   # alternated, so that the machine's drift hits all three alike
            none_ms.append(median_ms(lambda: ocr_engine.read_screen(tesseract_only, gray, ocr_engine.LineCache()), 1))
            cold_ms.append(median_ms(cold_new_table, 1))
            known_ms.append(median_ms(lambda: ocr_engine.read_screen(reader, gray, ocr_engine.LineCache()), 1))
        none_ms, cold_ms, known_ms = (statistics.median(v) for v in (none_ms, cold_ms, known_ms))
        cache = ocr_engine.LineCache()
        words = ocr_engine.read_screen(reader, gray, cache)
        warm_ms = median_ms(lambda: ocr_engine.read_screen(reader, gray, cache), args.runs)
        recall = ocr_scoring.recall((w["text"] for w in truth), (w.text for w in words))
        located = ocr_scoring.located_correct(truth, [(w.text, w.box) for w in words])
        print(f"{name:<11} lines {lines_ms:6.1f} ms  cold {cold_ms:6.0f} / {known_ms:6.0f} / {none_ms:6.0f} ms "
              f"({cold_ms / none_ms:.2f})  unchanged {warm_ms:6.1f} ms  "
              f"recall {recall:.3f}  located-correct {located:.3f}  "
              f"({len(ocr_engine.find_text_lines(gray))} lines)")
        none_cols, new_cols, second_cols = tesseract_columns(reader, tesseract_only, gray)
        print(f"{'':<11} columns read by Tesseract: no table {none_cols}, new table {new_cols} "
              f"({new_cols / none_cols:.2f}), second read {second_cols} ({second_cols / none_cols:.2f})")
    # A worst case for the frame painter: a stipple joined to the edges of a frame.
    height, width = 40, 1900
    crop = np.full((height, width), 255, np.uint8)
    crop[2, 5:width - 5] = crop[height - 3, 5:width - 5] = 0
    crop[2:height - 2, 5] = crop[2:height - 2, width - 6] = 0
    yy, xx = np.mgrid[3:height - 3, 6:width - 6]
    crop[3:height - 3, 6:width - 6][(yy + xx) % 2 == 0] = 0
    stipple_ms = median_ms(lambda: ocr_engine.mask_frames(crop, 255, 2, height - 2), args.runs)
    # ...and a dashed edge over a stipple: every dash is a place to start following from.
    dashed = np.full((12, width), 255, np.uint8)
    for x in range(0, width - 8, 8):
        dashed[0, x:x + 7] = 0
    yy, xx = np.mgrid[1:12, 0:width]
    dashed[1:12][(yy + xx) % 2 == 0] = 0
    dashed_ms = median_ms(lambda: ocr_engine.mask_frames(dashed, 255, 0, 12), args.runs)
    print(f"frame painter, worst cases (1900 px lines): a frame full of stipple {stipple_ms:.1f} ms, "
          f"a dashed edge over a stipple {dashed_ms:.1f} ms")
    f1, _ = load("typing_f1")
    f2, _ = load("typing_f2")

    def step():
        cache = ocr_engine.LineCache()
        ocr_engine.read_screen(reader, f1, cache)
        t0 = time.perf_counter()
        ocr_engine.read_screen(reader, f2, cache)
        return time.perf_counter() - t0
    steps = sorted(step() for _ in range(3))
    print(f"typed line  f1 -> f2 whole-frame re-scan with warm cache: {steps[1] * 1000:.1f} ms "
          "(damage-limited scan comes with the broker)")


if __name__ == "__main__":
    main()
