"""ParetoHqD: offline multi-objective alignment with Pareto high-quality data."""
__version__ = "0.1.0"


def load(run, weights, **kwargs):
    """The model and tokenizer of a trained run for any preference: `model, tokenizer =
    paretohqd.load("runs/demo", [0.3, 0.7])`. See `paretohqd.use.load` (imported on first call,
    so `import paretohqd` stays light)."""
    from paretohqd.use import load as _load

    return _load(run, weights, **kwargs)
