"""Analyses of populations of weights: spectral diagnostics (ESD, power law, Marchenko–Pastur),
features and accuracy predictors, knowledge regions."""

from .spectral import SpectralAnalyzer

__all__ = ["SpectralAnalyzer"]
