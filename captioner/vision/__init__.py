"""The Xception encoder (ImageNet), its weights obtained offline, and the on-disk feature cache.

Imports only `captioner.data`.
"""
