"""`vncmcp ocr IMAGE [--json]`: the screen-OCR pipeline on an image file."""
from __future__ import annotations

import json
import sys
import time


def group_lines(words) -> list[dict]:
    lines: dict[int, list] = {}
    for w in words:
        lines.setdefault(w.line, []).append(w)
    out = []
    for _, ws in sorted(lines.items()):
        x0 = min(w.box[0] for w in ws)
        y0 = min(w.box[1] for w in ws)
        x1 = max(w.box[2] for w in ws)
        y1 = max(w.box[3] for w in ws)
        out.append({"text": " ".join(w.text for w in ws), "box": [x0, y0, x1, y1],
                    "words": [{"text": w.text, "box": list(w.box), "conf": round(w.conf, 1)} for w in ws]})
    return out


def run(image_path: str, as_json: bool, lang: str) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from workers import ocr_engine
    try:
        image = Image.open(image_path).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        print(f"vncmcp ocr: cannot read {image_path}: {e}", file=sys.stderr)
        return 1
    try:
        reader = ocr_engine.LineReader(lang=lang)
    except ocr_engine.OCRUnavailable as e:
        print(f"vncmcp ocr: {e}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    words = ocr_engine.read_screen(reader, ocr_engine.to_gray(np.asarray(image)))
    elapsed = time.perf_counter() - started
    lines = group_lines(words)
    if as_json:
        json.dump({"image": image_path, "size": [image.width, image.height], "elapsed_ms": round(elapsed * 1000),
                   "lines": lines}, sys.stdout, ensure_ascii=False)
        print()
    else:
        for line in lines:
            print(line["text"])
    return 0
