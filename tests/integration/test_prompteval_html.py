"""report.html rendered in headless Chromium: the charts are drawn.

The page is self-contained (no script, no network), so a plain headless
screenshot shows exactly what an analyst sees. The PNG is decoded with the
standard library (zlib) and the bars of each chart are found by their
colours: control blue, significantly-better green, significantly-worse red.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import zlib

import pytest

from helpers import BIN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONTROL, BETTER, WORSE = (0x4A, 0x6F, 0xA5), (0x1E, 0x84, 0x49), (0xC0, 0x39, 0x2B)


def png_rows(path):
    """Decode an 8-bit RGB/RGBA PNG: (width, height, list of row bytes, bpp)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def count_colour(rows, bpp, rgb, tol=6):
    n = 0
    for row in rows:
        for i in range(0, len(row), bpp):
            if (abs(row[i] - rgb[0]) <= tol and abs(row[i + 1] - rgb[1]) <= tol
                    and abs(row[i + 2] - rgb[2]) <= tol):
                n += 1
    return n


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is needed: "
                    "install the Debian package 'chromium' (contrib/deps.sh does)")
def test_report_html_charts_render(tmp_path):
    rng = random.Random(3)
    src = tmp_path / "ab.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for v, cvr, fe in (("3", 0.05, 0.08), ("4", 0.07, 0.04), ("5", 0.051, 0.15)):
            for _ in range(3000):
                bad = rng.random() < fe
                f.write(json.dumps({"version": v, "facts": {"颜色": "白色"},
                                    "output": "黑色上衣" if bad else "白色上衣",
                                    "conversions": int(rng.random() < cvr)},
                                   ensure_ascii=False) + "\n")
        f.write(json.dumps({"version": "3", "facts": {"颜色": "黑色"}},
                           ensure_ascii=False) + "\n")
    out = tmp_path / "out"
    subprocess.run([str(BIN / "prompteval"), "run", str(src), "--out", str(out),
                    "--quiet"], check=True, capture_output=True, timeout=60)
    rep = json.load(open(out / "report.json", encoding="utf-8"))
    assert rep["verdict"]["winner"] == "4" and rep["verdict"]["significant"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Version 4 wins on conversion rate" in html
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    p = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--user-data-dir=%s" % profile,
         "--window-size=1000,1300", "--screenshot=%s" % shot,
         (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HOME=str(tmp_path)))
    assert shot.exists(), p.stderr[-2000:]
    width, height, rows, bpp = png_rows(shot)
    assert (width, height) == (1000, 1300)
    # the page is not blank: the charts sit in the top 950 pixels
    top = rows[:950]
    blue = count_colour(top, bpp, CONTROL)
    green = count_colour(top, bpp, BETTER)
    red = count_colour(top, bpp, WORSE)
    # control bars in four charts minus, winner bars in CVR, lift and
    # fact-error charts, version 5's fact-error bar in red
    assert blue > 3000, blue
    assert green > 2000, green
    assert red > 1500, red
    # and the bars are where the charts are (below the legend swatches):
    # right of the version names, left of the figures column
    xs = [i // bpp for row in rows[220:950] for i in range(0, len(row), bpp)
          if abs(row[i] - BETTER[0]) <= 6 and abs(row[i + 1] - BETTER[1]) <= 6
          and abs(row[i + 2] - BETTER[2]) <= 6]
    assert min(xs) > 100 and max(xs) < 700, (min(xs), max(xs))
