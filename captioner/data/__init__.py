"""Untrusted image bytes made safe, the Flickr8k readers, caption text and the vocabulary,
people's judgements of captions, caption statistics.

The bottom of the library: imports nothing else from `captioner`.
"""
