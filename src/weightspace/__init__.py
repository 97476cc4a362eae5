"""weightspace: trained neural-network weights as data."""

__version__ = "0.1.0"
