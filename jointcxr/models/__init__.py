"""Pure functional Flax Linen towers, heads and the two-tower model."""
