#!/usr/bin/env python
"""How much the attention model's words come from the language model (the sentinel's share)
rather than the photo, at beam 3 on the first validation photos: the README's figures.

    python benchmarks/sentinel_shares.py --data ../shared/flickr8k [--photos 300]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import captioner  # noqa: E402,F401  (sets thread and logging defaults before NumPy loads)
import numpy as np  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory; default $CAPTIONER_DATA_DIR")
    parser.add_argument("--photos", type=int, default=300, help="first N validation photos (default: 300)")
    args = parser.parse_args(argv)

    from captioner.api import Captioner
    from captioner.data.dataset import data_dir_from_env, load_flickr8k
    from captioner.training.features import model_maps

    model = Captioner.load(name="attention")
    dataset = load_flickr8k(data_dir_from_env(args.data))
    names = dataset.images("val")[:args.photos]
    # its own exit flow's maps, if it has one (views: issue 24)
    maps = model_maps([dataset.image_path(n) for n in names], model.flows, model.encoder)
    after_first, of_in_group_of, first_words = [], [], {}
    for best in model.caption_batch(maps, beam=3, attention=True):
        words, shares = best[0].text.split(), best[0].attention[:, -1]  # last column: the sentinel
        first_words.setdefault(words[0], []).append(shares[0])
        after_first.extend(shares[1:len(words)])
        of_in_group_of.extend(s for i, (w, s) in enumerate(zip(words, shares))
                              if w == "of" and i and words[i - 1] == "group")
    after_first = np.array(after_first)
    print(f"{len(names)} photos, {len(after_first)} words after the first: sentinel under 10% for "
          f"{np.mean(after_first < 0.1):.0%}, {after_first.mean():.1%} on average")
    if of_in_group_of:
        print(f'"of" in "group of": {np.mean(of_in_group_of):.0%} ({len(of_in_group_of)} times)')
    for word in ("a", "two", "three"):
        if word in first_words:
            print(f'first word "{word}": {np.mean(first_words[word]):.0%} ({len(first_words[word])} captions)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
