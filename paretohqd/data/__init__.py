"""Datasets: readers (HH-RLHF, tables, pairs, the published multi-attribute sets), `prepare` (samples,
labels, filters) and the held-out split."""
