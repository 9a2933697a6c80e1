"""Datasets: readers (HH-RLHF) and `prepare` (samples, filters, the held-out split)."""
