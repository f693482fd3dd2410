"""Model families; importing a family module registers its models."""

from . import satmae  # noqa: F401
