"""aquaflow: aquatic image workflows."""

__version__ = "0.1.0"
