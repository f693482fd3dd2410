"""Model families, one module each; importing a family module registers its models.

Nothing is imported here: :func:`slimkern.registry.get_cfg` imports a family when one of its models is first looked
up (the registry's ``ZOO`` table says which module registers which name), so ``import slimkern`` stays cheap.
"""
