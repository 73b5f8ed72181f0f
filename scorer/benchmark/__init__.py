"""The routing benchmark: every method against the baselines on held-out queries, with its plot."""
