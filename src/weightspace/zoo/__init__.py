"""Zoos: populations of trained checkpoints of one layout, on disk."""

from .store import Zoo

__all__ = ["Zoo"]
