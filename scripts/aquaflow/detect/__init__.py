"""Detection, instance segmentation and oriented boxes with Ultralytics YOLO, offline.

formats (YOLO / COCO read, validate, convert), ultra (offline setup, model building), train,
predict (batched and tiled prediction on decoded arrays), evaluate (pycocotools + Ultralytics),
engine (sharded bulk inference and gather), outputs (Parquet, COCO results, counts, overlays).
Nothing here imports `ultralytics` at module import time: `ultra.setup()` must run first.
"""
