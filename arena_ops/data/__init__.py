"""Instruction data: ingest, clean, dedup, shard (and, later, decontaminate and build test sets)."""
