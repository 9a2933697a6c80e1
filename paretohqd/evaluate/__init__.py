"""Evaluation: held-out answers, collapse, mean-reward fronts and their hypervolume."""
