"""Draw the pictures of docs/photos.md: a generated page and what the reader makes of it.

    python docs/photos/draw_pictures.py

The page is a tuning page (never a held-out one) written with generated letters, so the
pictures hold nothing from a data set. Each picture is small (a few tens of KB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from microconv.letters import pages, photo

HERE = Path(__file__).resolve().parent
SEED = 33                  # lines of two sizes in red on green paper: a shadow, vignetting,
                           # coloured speckles, JPEG and a rotation by 2.4 degrees
WIDTH = 560                # pictures are scaled to this width
LINE_COLOURS = [(0, 80, 255), (255, 130, 0), (0, 150, 70), (150, 40, 180), (0, 170, 200)]


def save(image, name, width=WIDTH):
    """Scale to ``width`` and store with a small palette: the pictures stay small."""
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    if image.mode != "L":
        image = image.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE,
                                              dither=Image.Dither.NONE)
    image.save(HERE / name, optimize=True)
    print(f"wrote {HERE / name} ({(HERE / name).stat().st_size // 1024} KB)")


def grey_picture(values, low, high):
    return Image.fromarray(np.uint8(np.clip((values - low) / (high - low), 0, 1) * 255))


def _writing(page, margin=40):
    """The part of the page that holds the writing."""
    boxes = np.array(page.boxes)
    return (max(int(boxes[:, 0].min()) - margin, 0), max(int(boxes[:, 1].min()) - margin, 0),
            min(int(boxes[:, 2].max()) + margin, page.image.width),
            min(int(boxes[:, 3].max()) + margin, page.image.height))


def main():
    page = pages.make_page(SEED)
    rgb = np.asarray(page.image, dtype=np.float32)
    gray = photo.as_gray(rgb)
    save(page.image, "1-page.png")

    # 2. the paper as the reader estimates it, and the darkness against it
    paper = photo.paper(gray)
    weak, strong, darkness = photo.ink_maps(gray)
    both = Image.new("L", (2 * gray.shape[1] + 20, gray.shape[0]), 255)
    both.paste(grey_picture(paper, 0, 255), (0, 0))
    both.paste(grey_picture(1 - darkness, 0.5, 1.0), (gray.shape[1] + 20, 0))
    save(both, "2-paper-and-darkness.png")

    # 3. ink: weak (grey) and strong (black) pixels
    ink = np.full(gray.shape, 255, dtype=np.uint8)
    ink[weak] = 150
    ink[strong] = 0
    writing = _writing(page)
    save(Image.fromarray(ink).crop(writing), "3-ink.png", width=900)

    # 4. lines, words and letters: one colour a line, the word number under each box
    letters = photo.find_letter_details(rgb)
    drawn = page.image.copy()
    pen = ImageDraw.Draw(drawn)
    font = ImageFont.load_default(size=18)             # Pillow's own font: nothing to install
    for letter in letters:
        left, top, right, bottom = letter.ink_box
        colour = LINE_COLOURS[letter.line % len(LINE_COLOURS)]
        pen.rectangle((left - 1, top - 1, right, bottom), outline=colour, width=2)
        pen.text((left, bottom + 3), str(letter.word + 1), fill=colour, font=font)
    save(drawn.crop(writing), "4-lines-words-letters.png", width=900)

    # 5. the first line's letters as the network sees them (28 x 28, shown 3 times larger)
    first = [x for x in letters if x.line == 0]
    prepared = photo.letter_images(gray, first)
    strip = np.concatenate([np.pad(p, 2) for p in prepared], axis=1)
    save(Image.fromarray(strip).resize((strip.shape[1] * 3, strip.shape[0] * 3),
                                       Image.NEAREST), "5-prepared.png", width=10_000)


if __name__ == "__main__":
    main()
