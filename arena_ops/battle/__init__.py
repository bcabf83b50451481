"""Battles: pairing, generation, the pairwise LLM judge (position swap), verifiers, resumable battle records."""
