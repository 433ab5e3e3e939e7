"""Model families, one file each (flows in ``flows/``). Importing this package imports none of them:
:mod:`genlab.registry` lists every built-in family on one line and imports it on first use."""
