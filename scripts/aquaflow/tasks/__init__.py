"""Task plug-ins: what one prediction is (tables, metrics, exports mapping, figures) per task."""
