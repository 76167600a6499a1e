"""Task `sound`: one prediction per window of a recording (class, ordinal distance bin)."""
