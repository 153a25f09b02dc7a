"""How the model in use was trained: learning curves, test scores, settings and provenance,
all read from what training saved in trained/."""
import pandas as pd
import streamlit as st

import app_support as app

st.title("Training")
captioner = app.require_captioner()
manifest, metrics, config = captioner.manifest, captioner.metrics, captioner.config

st.header("Learning curves", anchor=False)
history = pd.DataFrame(captioner.history)
if history.empty:
    st.info("This model directory has no training history (history.json).")
else:
    loss_col, bleu_col = st.columns(2, gap="large")
    with loss_col:
        st.subheader("Loss per epoch", anchor=False)
        st.line_chart(history.rename(columns={"loss": "training", "val_loss": "validation"}),
                      x="epoch", y=["training", "validation"], y_label="cross-entropy")
    with bleu_col:
        st.subheader("Validation BLEU-4 per epoch", anchor=False)
        st.line_chart(history, x="epoch", y="val_bleu4", y_label="BLEU-4 (greedy)")
    best = manifest.get("best_epoch")
    st.caption(f"The weights in use are from epoch {best}, the best validation BLEU-4; training "
               "stopped when it had not improved for a while." if best else
               "Validation BLEU-4 is computed with greedy decoding after every epoch.")
    with st.expander("Every epoch"):
        st.dataframe(history, hide_index=True)

st.header("Test scores by beam width", anchor=False)
if not metrics:
    st.info("This model was not evaluated on the test split (trained with --no-test).")
else:
    rows = {f"beam {beam}": dict(scores,
                                  **{"distinct captions": (metrics.get("distinct_captions") or {}).get(beam),
                                     "mean words": (metrics.get("mean_words") or {}).get(beam)})
            for beam, scores in sorted(metrics.get("beam", {}).items(), key=lambda item: int(item[0]))}
    human = metrics.get("human_first_reference")
    if human:  # the same toolkit on people: each photo's first caption against the other four
        rows["people (1 vs 4 refs)"] = dict(human)
    scores = pd.DataFrame.from_dict(rows, orient="index")
    st.dataframe(scores, column_config={
        name: st.column_config.NumberColumn(format="%.2f" if name == "mean words" else "%.3f")
        for name in scores.columns})
    st.caption(f"{metrics.get('n_images', '?')} photos of the {metrics.get('split', 'test')} split, "
               f"5 reference captions each; length penalty alpha = {metrics.get('length_alpha', '?')}, "
               "chosen on the validation split.")

settings_col, provenance_col = st.columns(2, gap="large")
with settings_col:
    st.header("Hyperparameters", anchor=False)
    settings = {k: v for k, v in config.to_json().items() if k != "extra"}
    st.dataframe(pd.DataFrame({"value": [str(v) for v in settings.values()]}, index=list(settings)))
    alpha_search = (config.extra or {}).get("val_alpha_search")
    if alpha_search:
        st.markdown("**Length penalty search** (validation split, beam 3)")
        st.dataframe(pd.DataFrame.from_dict(alpha_search, orient="index").rename_axis("alpha"))
with provenance_col:
    st.header("Provenance", anchor=False)
    data = manifest.get("dataset") or {}
    parameters = manifest.get("parameters") or captioner.trained.model.count_params()
    facts = {
        "trained": manifest.get("created", "?"),
        "dataset": f"{data.get('path', '?')} ({data.get('layout', '?')} layout)",
        "photos": ", ".join(f"{split} {n:,}" for split, n in (data.get("images") or {}).items()),
        "training captions": f"{data.get('train_captions', 0):,}",
        "decoder parameters": f"{parameters:,}",
        "vocabulary": f"{captioner.vocab_size:,} tokens",
        "epochs": f"{manifest.get('epochs_run', '?')} run, best {manifest.get('best_epoch', '?')}",
        "training time": f"{(manifest.get('training_seconds') or 0) / 60:.1f} min",
        "machine": manifest.get("machine", "?"),
        "encoder": f"{(manifest.get('encoder') or {}).get('name', '?')}, weights "
                   f"{(manifest.get('encoder') or {}).get('weights_checksum', '?')[:12]}",
    }
    facts.update({f"{name} version": version for name, version in (manifest.get("versions") or {}).items()})
    st.dataframe(pd.DataFrame({"": list(facts.values())}, index=list(facts)))
