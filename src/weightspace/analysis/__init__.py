"""Analyses of trained weights: spectral diagnostics (ESD, power law, Marchenko–Pastur)."""

from .spectral import SpectralAnalyzer

__all__ = ["SpectralAnalyzer"]
