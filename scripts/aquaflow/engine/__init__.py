"""The engine: shards (decode, predict, atomic outputs, reconciled counts), staging, gather, evaluation."""
