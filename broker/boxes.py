"""Screen boxes (x0, y0, x1, y1; x1/y1 exclusive): the few pure helpers that the broker
(damage -> lines to read) and the frontend mirror (damage -> regions to report) share."""
from __future__ import annotations

Box = tuple[int, int, int, int]


def intersects(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def expand(box: Box, mx: int, my: int, w: int, h: int) -> Box:
    return (max(box[0] - mx, 0), max(box[1] - my, 0), min(box[2] + mx, w), min(box[3] + my, h))


def merge_boxes(boxes: list[Box], gap: int = 0) -> list[Box]:
    """Union overlapping (or within `gap` px) boxes into their bounding boxes."""
    out = [tuple(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        result: list[Box] = []
        for b in out:
            for i, r in enumerate(result):
                if b[0] < r[2] + gap and r[0] < b[2] + gap and b[1] < r[3] + gap and r[1] < b[3] + gap:
                    result[i] = (min(b[0], r[0]), min(b[1], r[1]), max(b[2], r[2]), max(b[3], r[3]))
                    merged = True
                    break
            else:
                result.append(b)
        out = result
    return out
