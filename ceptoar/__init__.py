"""ceptoar: relays security notices from the national feed to every local government."""

__version__ = "0.1.0"

__all__ = ["__version__"]
