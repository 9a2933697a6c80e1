"""The preference pairs of the data sources: which prepared sample was chosen over which.

`data prepare` keeps both answers of an HH (or `pairs`) row as separate samples and forgets which
was chosen: the reward models, not the labels, rank them for ParetoHqD. The baselines that learn
from the labels (MORLHF's SFT start on the chosen answers, MODPO's pairs) read them back here, by
re-reading the sources: in every row of two samples the first is the chosen one.
"""

from __future__ import annotations

import pandas as pd

from paretohqd.config import DataConfig
from paretohqd.data.prepare import sample_id
from paretohqd.data.sources import as_source, read_rows


def label_pairs(cfg: DataConfig, ids: set[str]) -> pd.DataFrame:
    """Every (chosen, rejected) pair of `cfg.sources` whose two samples are both in `ids` (the
    prepared samples a run may train on: held-out prompts and filtered samples drop out). Only HH
    and `pairs` sources have pairs (other formats' answers come in no preference order), and a pair
    is two answers to one prompt (a few HH rows' transcripts diverge before the last answer).

    Returns:
        Rows chosen_id, rejected_id, source (the HH subset or file), one per pair, in source order.
    """
    rows = []
    for source in cfg.sources:
        if as_source(source).format not in ("hh", "pairs"):
            continue
        for samples in read_rows([source], cfg.hub_split):
            if len(samples) != 2 or samples[0].prompt != samples[1].prompt:
                continue
            chosen, rejected = (sample_id(s.prompt, s.response) for s in samples)
            if chosen != rejected and chosen in ids and rejected in ids:
                rows.append((chosen, rejected, samples[0].source))
    pairs = pd.DataFrame(rows, columns=["chosen_id", "rejected_id", "source"])
    return pairs.drop_duplicates(["chosen_id", "rejected_id"]).reset_index(drop=True)
