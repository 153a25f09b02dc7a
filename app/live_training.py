"""The Training page's live view of runs in progress, redrawn every few seconds by itself."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import support as app
from captioner.model_dirs.artifacts import ArtifactError
from captioner.training.live_run import LiveRun, format_seconds, live_runs

# progress.json is rewritten every 3 s at most; redrawing more often shows nothing new.
REFRESH_SECONDS = 5


@st.fragment(run_every=REFRESH_SECONDS)
def show_live_runs() -> None:
    try:
        runs = live_runs(app.model_dir())
    except ArtifactError as exc:  # a damaged checkpoint file: said here, the page goes on
        st.warning(f"Cannot show the runs in progress: {exc}", icon="⚠️")
        return
    seen = [str(run.directory) for run in runs]
    before = st.session_state.get("live_runs") or []
    st.session_state["live_runs"] = seen
    if set(before) - set(seen):  # a run ended, so a new model may be in: redraw the whole page
        st.rerun(scope="app")
    if not runs:
        return
    st.header("Training now", anchor=False)
    for run in runs:
        with st.container(border=True):
            show_run(run)


def show_run(run: LiveRun) -> None:
    where = f"epoch {run.epoch}" if run.epoch else ""
    if run.phase_epoch and run.max_phase_epochs:
        where += f" ({run.phase_epoch} of at most {run.max_phase_epochs} {run.phase_name} epochs)"
    title = f"{run.decoder} decoder" if run.model == run.decoder else f"{run.model} ({run.decoder} decoder)"
    st.subheader(f"{title}: {run.phase_name}" + (f", {where}" if where else ""), anchor=False)
    if not run.running:
        st.warning("No training process is running for this checkpoint: it stopped or was killed. "
                   "Running the same training command resumes it from its last finished epoch.")
    if run.total:
        # During validation the bar stays on the training batches, all done.
        now = " · validating" if run.step == "validation" else ""
        st.progress(min(run.done / run.total, 1.0), text=f"{run.done:,} of {run.total:,} {run.unit}{now}")
    elif run.step:
        st.caption(f"Step: {run.step}")
    loss_col, epoch_col, left_col, phase_col = st.columns(4)
    if run.mean_reward is not None:
        loss_col.metric("Mean reward (CIDEr-D)", f"{run.mean_reward:.3f}")
    else:
        loss_col.metric("Loss (last batches)", f"{run.loss:.3f}" if run.loss is not None else "–")
    epoch_col.metric("Time per epoch", format_seconds(run.epoch_seconds),
                     help="Median of this phase's finished epochs" if run.epoch_seconds_measured else
                     "Extrapolated from this epoch's batches (validation not included)")
    left_col.metric("This epoch ends in", format_seconds(run.epoch_left))
    if run.phase_left:
        low, high = run.phase_left
        phase_col.metric(f"{run.phase_name.capitalize()} ends in",
                         format_seconds(high) if round(low) == round(high) else
                         f"{format_seconds(low)} – {format_seconds(high)}",
                         help="Sooner if validation CIDEr does not improve (early stopping), "
                              "at most when every remaining epoch runs")
    if run.history:
        history = pd.DataFrame(run.history)
        scores = [c for c in ("val_cider", "val_bleu4") if c in history]
        st.line_chart(history, x="epoch", y=scores, height=220)
        # the best epoch's greedy CIDEr, as charted (a run choosing at beam search kept it by that)
        best_row = next((r for r in run.history if r.get("epoch") == run.best_epoch), None)
        best = "" if run.best_cider is None or best_row is None or "val_cider" not in best_row else (
            f" · best so far: epoch {run.best_epoch}, CIDEr {best_row['val_cider']:.3f}"
            + (f" (beam search: {best_row['val_cider_beam']:.3f})" if "val_cider_beam" in best_row else ""))
        finished = f"{len(history)} finished epoch" + ("s" if len(history) > 1 else "")
        st.caption(f"Validation scores of the {finished} (greedy){best}")
    else:
        st.caption("Validation scores appear when the first epoch ends.")
    ago = f"updated {format_seconds(run.updated_seconds_ago)} ago · " if run.updated_seconds_ago is not None else ""
    st.caption(f"{ago}{run.directory}")
