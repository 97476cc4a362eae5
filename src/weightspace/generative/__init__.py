"""Generative models of weights and the baselines they must beat, behind one Generator interface."""
