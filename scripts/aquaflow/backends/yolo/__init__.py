"""Ultralytics YOLO backend, offline: setup, model building, training and batched/tiled prediction.

Nothing here imports `ultralytics` at module import time: `ultra.setup()` must run first.
"""
