"""Analysis on top of explanations: their quality (:mod:`.evaluate`: region perturbation, model
randomisation)."""
