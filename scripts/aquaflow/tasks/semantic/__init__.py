"""Task `semantic`: one class per pixel of an image or georeferenced raster (metrics, outputs)."""
