#!/usr/bin/env python
"""Issue 24 planning: one training step of the exit flow (add_10 -> map, BatchNorm in inference mode)
and the attention decoder, against the decoder alone, on cached trunk outputs (batch 32, 5 captions a photo).

    PYTHONPATH=. python benchmarks/bench_finetune_step.py
"""
import time, numpy as np, glob
from captioner.vision.tf_setup import import_tensorflow_quietly
tf = import_tensorflow_quietly()
import keras
from captioner.vision.encoder import load_cached_weights
from captioner.vision.exit_flow import trunk_and_head
from captioner.model_dirs.artifacts import load_trained
m, c, _ = load_cached_weights()
_, head = trunk_and_head(m)
trained = load_trained("trained/attention")
dec = trained.model
files = sorted(glob.glob("/root/.cache/captioner/features/xception-add_10-*/*/*.npy"))[:64]
x = np.stack([np.load(f) for f in files]).astype(np.float32)
rng = np.random.default_rng(0)
opt_h = keras.optimizers.Adam(1e-5); opt_d = keras.optimizers.Adam(1e-4)
B=32; T=16
tokens = rng.integers(3, 2000, (B*5, T)).astype(np.int32)
idx = np.repeat(np.arange(B), 5).astype(np.int32)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
@tf.function
def step(xb):
    with tf.GradientTape() as tape:
        maps = head(xb, training=False)   # BatchNorm in inference mode, weights trainable
        regions = tf.reshape(maps, (-1, 100, 2048))
        logits = dec({"regions": regions, "photo_index": idx, "tokens": tokens[:, :-1]}, training=True)
        loss = loss_fn(tokens[:, 1:], logits)
    hv, dv = head.trainable_variables, dec.trainable_variables
    g = tape.gradient(loss, hv + dv)
    opt_h.apply_gradients(zip(g[:len(hv)], hv)); opt_d.apply_gradients(zip(g[len(hv):], dv))
    return loss
@tf.function
def dec_only(xb):
    with tf.GradientTape() as tape:
        regions = tf.reshape(xb, (-1, 100, 2048))
        logits = dec({"regions": regions, "photo_index": idx, "tokens": tokens[:, :-1]}, training=True)
        loss = loss_fn(tokens[:, 1:], logits)
    g = tape.gradient(loss, dec.trainable_variables); opt_d.apply_gradients(zip(g, dec.trainable_variables)); return loss
maps_fixed = head(x[:B]).numpy()
step(x[:B]); dec_only(maps_fixed)
for name, fn, arg in (("head+decoder", step, x[:B]), ("decoder only", dec_only, maps_fixed)):
    ts=[]
    for _ in range(4):
        t=time.perf_counter(); fn(arg).numpy(); ts.append(time.perf_counter()-t)
    print(name, "ms per photo", round(1000*np.median(ts)/B,1))
