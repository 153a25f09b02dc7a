"""Which exit flows a model reads, and the decoder that reads each member's own (issue 24).

A model without its own exit flow reads Xception's frozen map, one (10, 10, 2048) array a
photo. Where any model being decoded has its own exit flow, photos are encoded into views
(vision/tuned_encoder.ViewsEncoder): view 0 is ImageNet's exit flow, view i the i-th tuned
one in `flows`. `views_decoder` gives the NumPy decoder that reads them: each single model, or
each member of an ensemble, decodes its own view.
"""
from __future__ import annotations

from captioner.decoders.views import ViewDecoder
from captioner.model_dirs.artifacts import ExitFlow


def exit_flows(trained) -> list[ExitFlow]:
    """The tuned exit flows a model reads (an ensemble's, or a list of models' and ensembles':
    theirs, each once, in order)."""
    flows: list[ExitFlow] = []
    models = [m for t in (trained if isinstance(trained, list) else [trained])
              for m in (getattr(t, "members", None) or [t])]
    for model in models:
        flow = model.exit_flow
        if flow is not None and flow.sha256 not in {f.sha256 for f in flows}:
            flows.append(flow)
    return flows


def view_of(model, flows: list[ExitFlow]) -> int:
    """The view of photos encoded for `flows` that `model` (one model) reads."""
    flow = model.exit_flow
    if flow is None:
        return 0
    for i, other in enumerate(flows, start=1):
        if other.sha256 == flow.sha256:
            return i
    raise ValueError(f"{model.directory}: its exit flow {flow.sha256[:12]} is not among the views encoded")


def views_decoder(trained, flows: list[ExitFlow] | None = None):
    """`trained`'s NumPy decoder for photos encoded for `flows` (default: its own exit flows);
    with no flows at all, its plain decoder, which reads the frozen map."""
    flows = exit_flows(trained) if flows is None else flows
    if not flows:
        return trained.numpy_decoder()
    members = getattr(trained, "members", None)
    if not members:
        return ViewDecoder(trained.numpy_decoder(), view_of(trained, flows))
    from captioner.decoders.ensemble import EnsembleDecoder
    return EnsembleDecoder([ViewDecoder(m.numpy_decoder(), view_of(m, flows)) for m in members],
                           trained.weights)
