"""The subscriber registry: local government codes and the registry CSV."""

from ceptoar.registry.codes import (
    check_digit,
    is_prefecture,
    prefecture_of,
    validate_area_code,
    validate_lgcode,
)
from ceptoar.registry.csvio import ROLES, RegistryRow, read_registry, write_registry

__all__ = [
    "ROLES",
    "RegistryRow",
    "check_digit",
    "is_prefecture",
    "prefecture_of",
    "read_registry",
    "validate_area_code",
    "validate_lgcode",
    "write_registry",
]
