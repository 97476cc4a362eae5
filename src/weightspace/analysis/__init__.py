"""Analyses of populations of weights: features and accuracy predictors, knowledge regions."""
