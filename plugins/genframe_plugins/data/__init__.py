"""Data sets: where images (and labels) come from."""
