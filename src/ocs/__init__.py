"""ocs: an online charging daemon (RADIUS and Diameter credit control)."""

__version__ = "0.1.0"
