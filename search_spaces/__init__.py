"""Named search spaces for the nuisance phase and their translation to Ray Tune / Optuna."""
