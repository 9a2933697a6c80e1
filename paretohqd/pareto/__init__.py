"""The objective-space core: Pareto layers, preferences, selection, front metrics, controllability.

Pure numpy functions (arrays in, arrays out; bad input is a ValueError); `paretohqd.select` adds
tables, files and the picture. pyproject's `forbidden` contract keeps it free of our files and config.
"""

from paretohqd.pareto.control import calibration, largest_hole, neighbour_pairs, order_tau, reach
from paretohqd.pareto.layers import nondominated_layers, pareto_pool, pool_layers
from paretohqd.pareto.metrics import epsilon_additive, hypervolume, igd_plus, pareto_subset, sparsity, spacing
from paretohqd.pareto.preferences import check_preferences, preferences_from_config, simplex_grid
from paretohqd.pareto.rays import normalise, ray_distances, select_direction, select_scalarised

__all__ = [
    "calibration",
    "check_preferences",
    "epsilon_additive",
    "hypervolume",
    "igd_plus",
    "largest_hole",
    "neighbour_pairs",
    "nondominated_layers",
    "normalise",
    "order_tau",
    "pareto_pool",
    "pareto_subset",
    "reach",
    "pool_layers",
    "preferences_from_config",
    "ray_distances",
    "select_direction",
    "select_scalarised",
    "simplex_grid",
    "spacing",
    "sparsity",
]
