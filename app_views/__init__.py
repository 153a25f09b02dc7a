"""Parts of the app's pages that are long enough to live in their own file: each lays out
what a `captioner` module computes and holds no model logic of its own."""
