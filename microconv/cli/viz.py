"""Pictures made of text: the engine's graph as Graphviz dot, and letters drawn in a terminal.

Both are pure functions of their input, so the CLI, the dashboard and the tests share them.
"""

from __future__ import annotations

import numbers

import numpy as np
from rich.text import Text

INK = 80          # a pixel (0..255) at least this bright counts as ink when drawn in text


# --- the graph ------------------------------------------------------------------------------

def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape(shape):
    return "x".join(str(n) for n in shape) if shape else "scalar"


def graph_to_dot(output, names=None, title="microconv"):
    """Graphviz dot text for every node ``output`` depends on, inputs first.

    Each node is labelled with its op and shape; leaves use ``names`` ({id(tensor): name},
    e.g. the model's parameter names) or say whether they are trainable. Paste the text into
    ``dot -Tsvg`` to see what the engine will evaluate.
    """
    names = names or {}
    order = output.toposort()
    ids = {id(node): f"n{i}" for i, node in enumerate(order)}
    lines = [f"digraph {_quote(title)} {{", "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10];']
    for node in order:
        if node.op is None:
            kind = "parameter" if node.requires_grad else "input"
            label = f"{names.get(id(node)) or node.name or kind}\n{_shape(node.shape)}"
            style = ('shape=box, style="filled", fillcolor="#dde8f5"' if node.requires_grad
                     else 'shape=ellipse, style="filled", fillcolor="#f5ecd0"')
        else:
            arg = node.arg
            op = node.op.name
            if isinstance(arg, (numbers.Number, str)) and not isinstance(arg, bool):
                op += f" ({arg})"
            label = f"{op}\n{_shape(node.shape)}"
            style = 'shape=box, style="rounded"'
        lines.append(f"  {ids[id(node)]} [label={_quote(label)}, {style}];")
    for node in order:
        for src in node.srcs:
            lines.append(f"  {ids[id(src)]} -> {ids[id(node)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def model_graph_dot(batch_size=1, train=False, backend="numpy"):
    """The ConvoAlphabetModel's graph (with the loss when ``train``) as dot text."""
    from microconv.letters.model import ConvoAlphabetModel, LetterGraph

    model = ConvoAlphabetModel(backend)
    names = {id(p): name for name, p in model.named_parameters()}
    graph = LetterGraph(model, batch_size, train=train)
    out = graph.loss if train else graph.log_probs
    return graph_to_dot(out, names, title="ConvoAlphabetModel" + (" training" if train else ""))


# --- letters --------------------------------------------------------------------------------

_GLYPHS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def _pairs(image):
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected one grey image (H, W), got shape {image.shape}")
    if image.shape[0] % 2:
        image = np.vstack([image, np.zeros((1, image.shape[1]), dtype=image.dtype)])
    return image[0::2], image[1::2]


def _glyph_rows(image, ink):
    """Per line of text, each character's (glyph, brighter of its two pixels)."""
    top, bottom = _pairs(image)
    return [[(_GLYPHS[(bool(t >= ink), bool(b >= ink))], max(t, b)) for t, b in zip(trow, brow)]
            for trow, brow in zip(top, bottom)]


def letter_lines(image, ink=INK):
    """An upright grey image (28x28 uint8) as 14 lines of half-block characters.

    Each character covers two pixel rows: ▀ the upper is ink, ▄ the lower, █ both. The
    shapes read without colour, so the art survives logs and plain terminals.
    """
    return ["".join(glyph for glyph, _ in row) for row in _glyph_rows(image, ink)]


def letter_art(image, ink=INK):
    """The same drawing as ``letter_lines`` as Rich Text; faint ink (anti-aliased edges) is
    dimmed. No fixed colours, so it reads on dark and light terminals alike."""
    text = Text(no_wrap=True, overflow="crop")
    for number, row in enumerate(_glyph_rows(image, ink)):
        if number:
            text.append("\n")
        for glyph, brightest in row:
            text.append(glyph, style="dim" if glyph != " " and brightest < 2 * ink else None)
    return text
