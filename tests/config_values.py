"""The config schema's values for tests that call library functions directly.

Library functions take every config-backed parameter as a required keyword (the schema,
``workflow/schemas/config.schema.yaml``, is the only place a default lives; ``tests/test_config.py`` checks
it), so a test that wants "the pipeline's value" reads it here, through the config loader, instead of
writing the number again: ``SCHEMA["quality.permutations"]``."""

from __future__ import annotations

from types import MappingProxyType

from pairedscreen.config import schema_defaults

#: every leaf default of the config schema by key path (``{"rna.qc.max_pct_mt": 20, ...}``), read-only
SCHEMA = MappingProxyType(schema_defaults())
