"""Greedy search, beam search and sampling over the decoders' step interface, written once; the
search's trace as a tree; each word's confidence.

Imports the packages above: data, vision, decoders.
"""
