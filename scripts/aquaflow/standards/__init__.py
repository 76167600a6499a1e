"""Standards: EcoTaxa TSV, Darwin Core Archive (OBIS), taxonomy tables, Workflow Run RO-Crate."""
