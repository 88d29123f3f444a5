"""The screen-OCR pipeline with real tesseract on the sample screens with ground truth."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from workers import ocr_engine, ocr_scoring

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "ocr-samples")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Measured word recall (strict, bag of words) with margins; the floor catches regressions.
RECALL_FLOOR = {"desk_mixed": 0.97, "synth_ui": 0.955, "typing_f1": 0.975}

pytestmark = pytest.mark.skipif(not os.path.isdir(SAMPLES), reason="../shared/ocr-samples not present")


def load(name):
    image = np.asarray(Image.open(os.path.join(SAMPLES, f"{name}.png")).convert("RGB"))
    with open(os.path.join(SAMPLES, f"{name}.json")) as f:
        return image, json.load(f)["words"]


@pytest.fixture(scope="module")
def reader():
    return ocr_engine.LineReader()


@pytest.mark.parametrize("name", sorted(RECALL_FLOOR))
def test_recall_and_located_correct(reader, name):
    image, truth = load(name)
    words = ocr_engine.read_screen(reader, ocr_engine.to_gray(image))
    recall = ocr_scoring.recall((w["text"] for w in truth), (w.text for w in words))
    assert recall >= RECALL_FLOOR[name], f"{name}: recall {recall:.3f}"
    # Located-correct: a boxed true word has an OCR word with the same text whose box
    # centre lies inside the true box (a model could click it).
    located = ocr_scoring.located_correct(truth, [(w.text, w.box) for w in words])
    assert located >= RECALL_FLOOR[name] - 0.05, f"{name}: located-correct {located:.3f}"


def test_line_cache_skips_unchanged_lines(reader):
    image, _ = load("typing_f1")
    gray = ocr_engine.to_gray(image)
    cache = ocr_engine.LineCache()
    first = ocr_engine.read_screen(reader, gray, cache)
    misses = cache.misses
    again = ocr_engine.read_screen(reader, gray, cache)
    assert cache.misses == misses and cache.hits >= misses
    assert [(w.text, w.box) for w in first] == [(w.text, w.box) for w in again]

    # The next frame differs in one area only: only its lines are read again.
    image2, _ = load("typing_f2")
    before = cache.misses
    ocr_engine.read_screen(reader, ocr_engine.to_gray(image2), cache)
    assert 0 < cache.misses - before <= 4


def test_missing_traineddata_is_a_clear_error(tmp_path):
    with pytest.raises(ocr_engine.OCRUnavailable, match="no traineddata for klingon"):
        ocr_engine.LineReader(lang="klingon")
    with pytest.raises(ocr_engine.OCRUnavailable, match="no traineddata"):
        ocr_engine.LineReader(tessdata=str(tmp_path) + "/")


def test_ocr_command_json():
    out = subprocess.run([sys.executable, "-m", "broker.cli", "ocr", "--json",
                          os.path.join(SAMPLES, "desk_mixed.png")], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["size"] == [1920, 1080]
    texts = [line["text"] for line in result["lines"]]
    assert any("BUILD SUCCESSFUL" in t for t in texts)
    word = next(w for line in result["lines"] for w in line["words"] if w["text"] == "Invoice")
    x0, y0, x1, y1 = word["box"]
    assert x0 < 40 and 75 < y0 < 90 and x1 - x0 > 30

    bad = subprocess.run([sys.executable, "-m", "broker.cli", "ocr", "/nonexistent.png"], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert bad.returncode == 1 and "cannot read /nonexistent.png" in bad.stderr
