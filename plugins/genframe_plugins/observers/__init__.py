"""Observers of runs: console progress, TensorBoard, loss curves."""
