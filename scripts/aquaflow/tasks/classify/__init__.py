"""Classification task: top-k labels and probabilities per image; accuracy, F1, calibration."""
