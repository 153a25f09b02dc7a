"""Run a tiny training in a subprocess (so tests can kill it):
python train_helper.py DATA OUT CKPT [merge|attention]."""
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import PixelEncoder  # noqa: E402
from captioner.decoders.config import Config  # noqa: E402
from captioner.training.loop import train  # noqa: E402

TINY = Config(min_word_count=1, embed_dim=16, units=32, attention_dim=16, batch_size=16, max_epochs=5,
              patience=6, learning_rate=3e-3, max_decode_length=8, image_dropout=0.1, embed_dropout=0.1,
              scst_max_epochs=3, scst_learning_rate=1e-3, scst_xe_weight=0.5)

if __name__ == "__main__":
    data, out, checkpoint = sys.argv[1:4]
    decoder = sys.argv[4] if len(sys.argv) > 4 else "merge"
    # the attention run measures the self-critical guard at beam 3 and chooses its epoch by
    # CIDEr there, rewards contrast with similar photos and validates a moving average of the
    # weights (so a resume must restore it); the merge run guards and chooses greedily, with
    # plain CIDEr-D and the last weights
    attention = decoder == "attention"
    config = dataclasses.replace(TINY, decoder=decoder, scst_distinct_beam=3 if attention else 1,
                                 scst_contrast_weight=0.5 if attention else 0.0,
                                 scst_ema=0.9 if attention else 0.0,
                                 scst_select="beam" if attention else "greedy")
    train(data, out, config, checkpoint, encoder=PixelEncoder(),
          evaluate_test=True, progress=False)
