"""How the models were trained: a run in progress (live), every model's learning curves and
test scores side by side, settings and provenance, all read from what training saved."""
import altair as alt
import pandas as pd
import streamlit as st

from app import support as app
from app.live_training import show_live_runs
from captioner.evaluation.plots import PHASE_LABEL, curve_points
from captioner.evaluation.report import ensemble_members

st.title("Training")
show_live_runs()
records, errors = app.model_records()
for name, message in errors.items():
    app.show_model_error(message)
for name, record in records.items():
    if record.get("stale"):
        st.warning(f"**{name}** was scored with other weights of {', '.join(record['stale'])} than trained/ "
                   "holds now (retrained since): its scores below are out of date, and the app does not "
                   "use it until `make ensemble` re-scores it.", icon="⚠️")
if not records:
    if not errors:
        app.show_model_error(f"{app.model_dir()}: no trained model here yet.")
    st.stop()
histories = {name: r["history"] for name, r in records.items()}


def curve(key: str, label: str, phases=("xe", "scst"), measured: str = "") -> pd.DataFrame:
    """One recorded quantity as rows of (model, phase, epoch, value, line): a line per model,
    per way of measuring it (`measured`, e.g. "greedy") and, where both phases are drawn, per
    phase."""
    rows = [dict(p, line=", ".join(filter(None, [measured, PHASE_LABEL[p["phase"]] if len(phases) > 1 else ""])))
            for p in curve_points(histories, key) if p["phase"] in phases]
    return pd.DataFrame(rows, columns=["model", "phase", "epoch", "value", "line"]).rename(columns={"value": label})


def learning_chart(data: pd.DataFrame, label: str) -> alt.Chart:
    """Colour says which model, the dash what the line measures: two short legends under the
    chart, never cut off, instead of one legend of long "model, measure, phase" names."""
    legend = alt.Legend(orient="bottom", direction="vertical", title=None, labelLimit=0)
    base = alt.Chart(data).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y(f"{label}:Q", scale=alt.Scale(zero=False)),
        color=alt.Color("model:N", legend=legend, scale=alt.Scale(scheme="category10")),
        tooltip=["model", "line", "epoch", alt.Tooltip(f"{label}:Q", format=".4f")])
    # the lines carry the dash (and its legend draws dashes); the points, one per epoch, do not
    lines = base.mark_line().encode(strokeDash=alt.StrokeDash("line:N", legend=legend))
    return lines + base.mark_point(filled=True, size=18).encode(detail="line:N")


st.header("Learning curves", anchor=False)
ensembles = [name for name, r in records.items() if r["config"].get("decoder") == "ensemble"]
if ensembles:
    st.caption(", ".join(ensembles) + ": made from the trained models, not trained itself, so it has no "
               "curves; its mix and length penalty were chosen on the validation split (below).")
if not any(histories.values()):
    st.info("These model directories have no training history (history.json).")
else:
    loss = pd.concat([curve("loss", "cross-entropy", ("xe",), "training"),
                      curve("val_loss", "cross-entropy", ("xe",), "validation")])
    charts = [("Loss per cross-entropy epoch", loss, "cross-entropy"),
              ("Validation CIDEr per epoch",
               pd.concat([curve("val_cider", "CIDEr", measured="greedy"),
                          curve("val_cider_beam", "CIDEr", ("scst",), "beam search")]), "CIDEr"),
              ("Validation BLEU-4 per epoch", curve("val_bleu4", "BLEU-4", measured="greedy"), "BLEU-4"),
              ("Mean CIDEr-D of the self-critical samples",
               pd.concat([curve("mean_reward", "CIDEr-D", ("scst",), "vs its own photo's references"),
                          curve("mean_similar_photo_reward", "CIDEr-D", ("scst",), "vs a similar photo's references")]),
               "CIDEr-D"),
              ("Distinct validation captions per epoch",
               pd.concat([curve("val_distinct", "share distinct", measured="greedy"),
                          curve("val_distinct_beam", "share distinct", ("scst",), "beam search")]),
               "share distinct")]
    charts = [chart for chart in charts if not chart[1].empty]
    for row in range(0, len(charts), 2):
        for column, (title, data, label) in zip(st.columns(2, gap="large"), charts[row:row + 2]):
            with column:
                st.subheader(title, anchor=False)
                st.altair_chart(learning_chart(data, label), width="stretch")
    best = {name: (r["manifest"].get("best_epoch"), r["manifest"].get("best_phase", "xe"))
            for name, r in records.items() if r["manifest"].get("best_epoch")}
    guards = {name: (r["config"].get("scst_min_distinct"), r["config"].get("scst_distinct_beam") or 1)
              for name, r in records.items()}
    st.caption("Self-critical epochs continue from the best cross-entropy weights; the weights kept are "
               "those of the best validation epoch, a self-critical one only if enough of its validation "
               "captions are distinct (CIDEr alone rewards generic captions; "
               + ", ".join(f"{name}: {share:.0%} " + ("greedily" if beam == 1 else f"at beam {beam}")
                           for name, (share, beam) in guards.items() if share)
               + (", " if any(share for share, _ in guards.values()) else "") + "0% means no guard): " + ", ".join(
                   f"{name} epoch {epoch} ({PHASE_LABEL.get(phase, phase)})" for name, (epoch, phase) in best.items())
               + ". Validation scores use greedy decoding after every epoch"
               + "".join(f"; {name}'s self-critical epochs are kept by their validation CIDEr at beam "
                         f"{r['config'].get('scst_distinct_beam')}, as the app decodes"
                         for name, r in records.items() if r["config"].get("scst_select") == "beam")
               + "".join(f"; {name}'s training loss is label-smoothed ({r['config']['label_smoothing']} of each "
                         "target spread over the vocabulary), its validation loss is not"
                         for name, r in records.items() if r["config"].get("label_smoothing"))
               + "".join(f"; {name}'s self-critical epochs are scored (and kept) as a moving average of "
                         f"the weights, momentum {r['config']['scst_ema']} per update"
                         for name, r in records.items() if r["config"].get("scst_ema"))
               + "".join(f"; {name}'s self-critical epochs also distil {r['manifest']['scst_teacher']['directory']} "
                         "(its next-word distribution on each sampled caption, weight "
                         f"{r['config'].get('scst_teacher_weight')} per word)"
                         for name, r in records.items() if r["manifest"].get("scst_teacher"))
               + ".")
    with st.expander("Every epoch"):
        st.dataframe(pd.concat([pd.DataFrame(h).assign(model=name) for name, h in histories.items()]),
                     hide_index=True)

st.header("Test scores by beam width", anchor=False)
for column, (name, record) in zip(st.columns(len(records), gap="large"), records.items()):
    metrics = record["metrics"]
    column.subheader(name, anchor=False)
    if not metrics:
        column.info("Not evaluated on the test split (trained with --no-test).")
        continue
    rows = {f"beam {beam}": dict(scores, **{"distinct captions": (metrics.get("distinct_captions") or {}).get(beam),
                                            "mean words": (metrics.get("mean_words") or {}).get(beam)})
            for beam, scores in sorted(metrics.get("beam", {}).items(), key=lambda item: int(item[0]))}
    if metrics.get("human_first_reference"):  # the same toolkit on each photo's first caption vs the other four
        rows["people (1 vs 4 refs)"] = dict(metrics["human_first_reference"])
    scores = pd.DataFrame.from_dict(rows, orient="index")
    column.dataframe(scores, column_config={
        c: st.column_config.NumberColumn(format="%.2f" if c == "mean words" else "%.3f") for c in scores.columns})
    column.caption(f"{metrics.get('n_images', '?')} photos of the {metrics.get('split', 'test')} split, 5 "
                   f"references each; length penalty alpha = {metrics.get('length_alpha', '?')} (chosen on "
                   "the validation split).")


def side_by_side(facts_of) -> pd.DataFrame:
    """One column per model, one row per fact."""
    return pd.DataFrame({name: pd.Series(facts_of(record), dtype=str) for name, record in records.items()})


def provenance(record: dict) -> dict:
    manifest = record["manifest"]
    data, encoder = manifest.get("dataset") or {}, manifest.get("encoder") or {}
    if record["config"].get("decoder") == "ensemble":  # made from trained models, not trained
        facts = {"scored": manifest.get("created", "?"), "members": record["config"].get("members", "?"),
                 "choosing and scoring time": f"{(manifest.get('scoring_seconds') or 0) / 60:.1f} min",
                 "machine": manifest.get("machine", "?"),
                 "encoder": f"{encoder.get('name', '?')}, weights {encoder.get('weights_checksum', '?')[:12]}"}
        facts.update({f"{name} version": v for name, v in (manifest.get("versions") or {}).items()})
        return facts
    phases = manifest.get("phase_seconds") or {"xe": manifest.get("training_seconds") or 0}
    facts = {
        "trained": manifest.get("created", "?"),
        "dataset": f"{data.get('path', '?')} ({data.get('layout', '?')} layout)",
        "photos": ", ".join(f"{split} {n:,}" for split, n in (data.get("images") or {}).items()),
        "training captions": f"{data.get('train_captions', 0):,}",
        "decoder parameters": f"{manifest.get('parameters', 0):,}",
        "vocabulary": f"{record['config'].get('vocab_size') or 0:,} tokens",
        "epochs": f"{manifest.get('epochs_run', '?')} run, best {manifest.get('best_epoch', '?')}",
        **({"distilled from": f"{teacher['directory']} (manifest {teacher['manifest_sha256'][:12]})"}
           if (teacher := manifest.get("scst_teacher")) else {}),
        **({"extended from": f"{extended['directory']} (manifest {extended['manifest_sha256'][:12]})"}
           if (extended := manifest.get("extended_from")) else {}),
        "training time": ", ".join(f"{PHASE_LABEL[p]} {s / 60:.1f} min" for p, s in phases.items() if p in PHASE_LABEL),
        "machine": manifest.get("machine", "?"),
        "encoder": f"{encoder.get('name', '?')}, weights {encoder.get('weights_checksum', '?')[:12]}",
    }
    facts.update({f"{name} version": v for name, v in (manifest.get("versions") or {}).items()})
    return facts


settings_col, provenance_col = st.columns(2, gap="large")
with settings_col:
    st.header("Hyperparameters", anchor=False)
    st.dataframe(side_by_side(lambda r: {k: v for k, v in r["config"].items() if k != "extra"}))
    for name, record in records.items():
        alpha_search = (record["config"].get("extra") or {}).get("val_alpha_search")
        if alpha_search:
            st.markdown(f"**Length penalty search, {name}** (validation split, beam 3)")
            st.dataframe(pd.DataFrame.from_dict(alpha_search, orient="index").rename_axis("alpha"))
        mix_search = (record["config"].get("extra") or {}).get("val_mix_search")
        if mix_search:
            members = [member for member, _ in ensemble_members(record["config"])]
            # rows name a mix as ensemble_dir.mix_key does: two members by the first one's weight
            rows = f"{members[0]} weight" if len(members) == 2 else "weights (" + " : ".join(members) + ")"
            st.markdown(f"**Mix search, {name}**: validation CIDEr at beam 3, by {rows} (rows) "
                        "and length penalty alpha (columns)")
            st.dataframe(pd.DataFrame.from_dict(mix_search, orient="index").rename_axis(rows))
with provenance_col:
    st.header("Provenance", anchor=False)
    st.dataframe(side_by_side(provenance))
