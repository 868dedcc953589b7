"""compare layer: pairwise divergence of named arrays, streaming, bounded memory; verdicts."""
