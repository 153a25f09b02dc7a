"""The beam search drawn as a tree, in Graphviz DOT (the app renders it with st.graphviz_chart).

Input is the trace `beam_search(..., trace=[])` records (decoding.TraceStep): at each step the
hypotheses kept, the candidates ranked but dropped, and those that ended. Steps run left to
right, so a 30-word search at width 10 is 30 columns of at most 10 kept words (plus the faint
pruned ones), which stays readable where a top-down tree would be 300 nodes wide.
"""
from __future__ import annotations

from dataclasses import dataclass

from captioner.decoding.search import TraceStep
from captioner.data.text import Vocabulary

KEPT = 'shape=box, style="rounded,filled", fillcolor="#f4f6fa", color="#8a94a6"'
PRUNED = 'shape=box, style="rounded,dashed", color="#dddddd", fontcolor="#bbbbbb"'
FINISHED = 'shape=box, style="rounded,filled", fillcolor="#e8f5e9", color="#43a047"'
CUT = 'shape=box, style="rounded,filled,dashed", fillcolor="#fff8e1", color="#f9a825"'
WINNER = 'penwidth=2.5, color="#d62728", fontcolor="#d62728"'


@dataclass(frozen=True)
class Winner:
    step: int                # the step whose `finished` list holds it
    index: int               # its position in that list
    tokens: tuple[int, ...]  # its words, as the search returned them
    normalized_log_prob: float


def photo_steps(trace: list[TraceStep], photo: int = 0) -> dict[int, TraceStep]:
    return {s.step: s for s in trace if s.photo == photo}


def path_tokens(steps: dict[int, TraceStep], step: int, parent: int | None) -> tuple[int, ...]:
    """The words of the hypothesis whose parent is kept[parent] of step `step - 1`."""
    words = []
    t = step - 1
    while t >= 0 and parent is not None:
        parent, token, _ = steps[t].kept[parent]
        words.append(token)
        t -= 1
    return tuple(reversed(words))


def winner(trace: list[TraceStep], photo: int = 0) -> Winner | None:
    """The finished hypothesis the search returns first: best normalised score, then best
    log-probability, then the smaller token sequence (beam_search's own order)."""
    steps = photo_steps(trace, photo)
    best, best_key = None, None
    for t, step in steps.items():
        for i, (parent, log_prob, normalized, _) in enumerate(step.finished):
            tokens = path_tokens(steps, t, parent)
            key = (-normalized, -log_prob, tokens)
            if best_key is None or key < best_key:
                best, best_key = Winner(t, i, tokens, normalized), key
    return best


def _label(text: str) -> str:
    # Vocabulary words are a-z, but escape anyway: the label is DOT source.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def beam_tree_dot(trace: list[TraceStep], vocab: Vocabulary, photo: int = 0,
                  show_pruned: bool = True, title: str | None = None) -> str:
    """DOT source of one photo's search: kept words as boxes, pruned ones faint, finished
    hypotheses with their normalised score, the winning path in red."""
    steps = photo_steps(trace, photo)
    best = winner(trace, photo)
    on_path = set()  # (step, kept index) of the winner's ancestors
    if best is not None:
        parent, t = steps[best.step].finished[best.index][0], best.step - 1
        while t >= 0 and parent is not None:
            on_path.add((t, parent))
            parent, t = steps[t].kept[parent][0], t - 1

    def node(t: int, parent: int | None) -> str:
        return "root" if t < 0 or parent is None else f"k{t}_{parent}"

    lines = ["digraph beam {", "  rankdir=LR; nodesep=0.05; ranksep=0.18;",
             '  node [fontname="Helvetica", fontsize=10, height=0.22, margin="0.05,0.02"];',
             '  edge [arrowsize=0.35, color="#b0b7c3"];',
             f'  root [label="start", {KEPT}, {WINNER if best else ""}];']
    if title:
        lines.insert(1, f"  label={_label(title)}; labelloc=t; fontname=Helvetica; fontsize=12;")
    for t in sorted(steps):
        step = steps[t]
        for j, (parent, token, score) in enumerate(step.kept):
            win = (t, j) in on_path
            word = vocab.itos[token]
            lines.append(f"  k{t}_{j} [label={_label(word)}, tooltip={_label(f'{word}: log p {score:.2f}')}, "
                         f"{KEPT}{', ' + WINNER if win else ''}];")
            lines.append(f"  {node(t - 1, parent)} -> k{t}_{j}{' [' + WINNER + ']' if win else ''};")
        if show_pruned:
            for i, (parent, token, score) in enumerate(step.pruned):
                word = vocab.itos[token]
                lines.append(f"  p{t}_{i} [label={_label(word)}, "
                             f"tooltip={_label(f'{word}: log p {score:.2f}, pruned')}, {PRUNED}];")
                lines.append(f'  {node(t - 1, parent)} -> p{t}_{i} [color="#e6e6e6", style=dashed];')
        for i, (parent, log_prob, normalized, ended) in enumerate(step.finished):
            win = best is not None and (best.step, best.index) == (t, i)
            text = f"{'end' if ended else 'cut'} {normalized:.2f}"
            tip = _label(f"log p {log_prob:.2f}, score {normalized:.2f}")
            style = (FINISHED if ended else CUT) + (", " + WINNER if win else "")
            lines.append(f"  f{t}_{i} [label={_label(text)}, tooltip={tip}, {style}];")
            lines.append(f"  {node(t - 1, parent)} -> f{t}_{i}{' [' + WINNER + ']' if win else ''};")
    lines.append("}")
    return "\n".join(lines)
