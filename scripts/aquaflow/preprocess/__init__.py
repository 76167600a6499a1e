"""Preprocessing on numpy arrays: background subtraction, segmentation, tiles, dedup, pipelines.

Pure functions (no snakemake, no global state), grayscale 8- or 16-bit in, same depth out:

- `background`: blank-scan subtraction (averaged blanks, optional flat field) and a rolling-median
  background for frame sequences;
- `segment`: threshold + morphology + connected components, EcoTaxa-named features in physical
  units, padded vignettes; `scan` runs it strip by strip so a scan of hundreds of megapixels
  never has to sit in memory as a whole;
- `tiles`: patchify / unpatchify (exact round trip, overlaps averaged);
- `dedup`: near-duplicate frames by perceptual hash;
- `pipeline`: the ordered steps of a use case's `preprocess:` section (what the workflow runs).
"""
