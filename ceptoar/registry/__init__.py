"""The subscriber registry: the registry CSV and the list of every local government it is built from."""

from ceptoar.registry.csvio import RegistryRow, read_registry, write_registry

__all__ = ["RegistryRow", "read_registry", "write_registry"]
