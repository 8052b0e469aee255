"""The configuration: one loader (:func:`load_config`) applying ``workflow/schemas/config.schema.yaml``
(unknown keys refused with the nearest valid key, defaults filled from the schema, the only place a
default lives), and helpers resolving resources that may live in the workflow's repository."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pairedscreen.errors import MissingInputError, PairedscreenError

CELLPOSE_MODEL_NAMES = {"cyto", "cyto2", "cyto3", "nuclei", "tissuenet_cp3", "livecell_cp3", "yeast_PhC_cp3",
                        "yeast_BF_cp3", "bact_phase_cp3", "bact_fluor_cp3", "deepbacs_cp3", "cyto2_cp3"}


def resolve_model(value: str, workdir: str | Path, basedir: str | Path) -> str:
    """A Cellpose model name stays a name; a path is made absolute (working directory first, then the
    workflow's repository, where the shipped demo models live)."""
    if value in CELLPOSE_MODEL_NAMES:
        return value
    p = Path(value)
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [Path(workdir) / p, Path(basedir) / p]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    names = ", ".join(sorted(CELLPOSE_MODEL_NAMES))
    raise MissingInputError(
        f"segmentation model {value!r} is neither a Cellpose model name ({names}) "
        f"nor an existing file (looked in {', '.join(str(c) for c in candidates)}). Fix: set "
        "paint.segmentation.*.model to a model name (downloaded by Cellpose, or read from "
        "CELLPOSE_LOCAL_MODELS_PATH offline) or to a model file"
    )


def estimated_cells(expected_cells: int, n_wells: int, cells_per_well: int = 500) -> int:
    """Rough screen size used to decide ``pair.cells_h5mu: auto`` at planning time."""
    return int(expected_cells) + int(n_wells) * cells_per_well


# ------------------------------------------------------------------------------------ configuration
class ConfigError(PairedscreenError, ValueError):
    """Problems in the configuration; the message lists each (key path, value, what is allowed, fix)."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        head = f"{source}: " + ("1 problem" if len(problems) == 1 else f"{len(problems)} problems")
        super().__init__(head + "\n" + "\n".join(f"  {p}" for p in problems))


def config_schema() -> dict:
    """``workflow/schemas/config.schema.yaml``: the only place a configuration default lives."""
    from pairedscreen.sheets import load_schema

    return load_schema("config.schema.yaml")


def _object_props(schema: Mapping[str, Any]) -> dict[str, Any]:
    return dict(schema.get("properties", {})) if isinstance(schema, Mapping) else {}


def _all_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every key path the schema knows (``rna.qc.max_pct_mt``)."""
    out = []
    for k, sub in _object_props(schema).items():
        path = f"{prefix}{k}"
        out.append(path)
        out += _all_keys(sub, path + ".")
    return out


def _suggest(key: str, here: list[str], everywhere: list[str], prefix: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, here, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    # the key may belong to another section (e.g. `max_pct_mt` written under `rna:` instead of `rna.qc:`)
    leaves = {p.rsplit(".", 1)[-1]: p for p in everywhere if p.rsplit(".", 1)[-1] != p or "." not in p}
    close = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.75)
    if close and leaves[close[0]] != f"{prefix}{key}":
        return f"did you mean `{leaves[close[0]]}`?"
    return "valid keys here: " + (", ".join(f"`{k}`" for k in here) or "none")


def _unknown_keys(instance: Any, schema: Mapping[str, Any], everywhere: list[str], prefix: str = ""
                  ) -> list[str]:
    """Keys the schema does not know, at every level where the schema closes the object
    (``additionalProperties: false``), each with the nearest valid key."""
    if not isinstance(instance, Mapping) or not isinstance(schema, Mapping):
        return []
    props = _object_props(schema)
    out = []
    for key, value in instance.items():
        if key in props:
            out += _unknown_keys(value, props[key], everywhere, f"{prefix}{key}.")
        elif schema.get("additionalProperties", True) is False:
            out.append(f"unknown key `{prefix}{key}`: {_suggest(str(key), list(props), everywhere, prefix)}")
    return out


def fill_defaults(instance: dict, schema: Mapping[str, Any]) -> dict:
    """Fill the schema's ``default`` values into ``instance`` in place, top-down (a missing section with
    ``default: {}`` is created and then filled), like ``snakemake.utils.validate(set_default=True)``.
    A section whose schema has ``x-presets`` and whose ``preset`` key names one of them (e.g.
    ``paint.features.preset: jump``) first takes that preset's values for the keys it leaves out; keys
    set in the config win over the preset, the preset over the defaults."""
    presets = schema.get("x-presets") if isinstance(schema, Mapping) else None
    if presets and isinstance(instance.get("preset"), str) and instance["preset"] in presets:
        for key, value in presets[instance["preset"]].items():
            instance.setdefault(key, copy.deepcopy(value))
    for key, sub in _object_props(schema).items():
        if key not in instance and isinstance(sub, Mapping) and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict):
            fill_defaults(instance[key], sub)
    return instance


def schema_defaults(schema: Mapping[str, Any] | None = None, prefix: str = "") -> dict[str, Any]:
    """Every leaf default of the config schema by key path (``{'rna.qc.max_pct_mt': 20, ...}``)."""
    schema = config_schema() if schema is None else schema
    out: dict[str, Any] = {}
    for key, sub in _object_props(schema).items():
        path = f"{prefix}{key}"
        if "default" in sub and sub["default"] != {}:
            out[path] = sub["default"]
        out.update(schema_defaults(sub, path + "."))
    return out


def _describe(err: Any) -> str:
    from pairedscreen.sheets import _allowed

    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "required":
        return f"`{where}`: {err.message}. Fix: add it (see config/config.yaml for an example)"
    return (f"`{where}` is {err.instance!r}, not {_allowed(err)}. "
            f"Fix: set `{where}` to {_allowed(err, with_pattern=False)}")


def read_yaml(path: str | os.PathLike, source: str | None = None) -> Any:
    """A YAML file's content; a syntax error is a :class:`ConfigError` naming the file, the line and column
    (1-based, as editors count) and what the parser expected, not a PyYAML traceback."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        def at(mark: Any) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"

        problem, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        where = at(problem or context) if (problem or context) is not None else "an unknown place"
        what = str(getattr(exc, "problem", None) or exc)
        if getattr(exc, "context", None):
            what += f" ({exc.context}" + (f" at {at(context)})" if context is not None else ")")
        raise ConfigError(source or str(path), [
            f"YAML syntax error at {where}: {what or exc}. Fix: correct the YAML there (indentation with "
            "spaces, `key: value` pairs, quotes closed; a value with `: ` or starting with `*`, `&`, `!`, "
            "`%`, `@` needs quotes)"]) from None


def check_yaml_syntax(path: str | os.PathLike) -> None:
    """Raise :class:`ConfigError` (file, line, column) when ``path`` exists and is not valid YAML: for the
    Snakefile, before Snakemake's own ``configfile:`` parser says only that the file is not valid YAML."""
    if Path(path).exists():
        read_yaml(path)


def load_config(config: str | os.PathLike | Mapping[str, Any], *, source: str | None = None) -> dict:
    """The resolved configuration: read (a YAML path or a mapping, copied), unknown keys refused with the
    nearest valid key, checked against ``workflow/schemas/config.schema.yaml`` and every schema default
    filled in. Raises :class:`ConfigError` listing all problems at once. Stages take this resolved config
    and look keys up without fallbacks: the schema is the only source of defaults."""
    import jsonschema

    if isinstance(config, Mapping):
        cfg = copy.deepcopy(dict(config))
        source = source or "config"
    else:
        path = Path(config)
        source = source or str(path)
        if not path.exists():
            raise ConfigError(source, ["config file not found. Fix: create it (copy config/config.yaml)"])
        cfg = read_yaml(path, source) or {}
        if not isinstance(cfg, dict):
            raise ConfigError(source, ["the file is not a YAML mapping of keys. Fix: see config/config.yaml"])
    schema = config_schema()
    problems = _unknown_keys(cfg, schema, _all_keys(schema))
    fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path]):
        if err.validator == "additionalProperties":
            continue  # reported above, with a suggestion
        problems.append(_describe(err))
    if problems:
        raise ConfigError(source, problems)
    return cfg


def resolve_section(section: str, values: Mapping[str, Any] | None = None) -> dict:
    """One resolved config section (``"rna"``, ``"profiles"``, ``"paint.segmentation"``...): ``values``
    checked against that part of the schema (unknown keys refused with the nearest valid key) and the
    schema's defaults filled in — for tests, benchmarks and callers that run one stage without a whole
    config file. Raises :class:`ConfigError`."""
    import jsonschema

    schema: Mapping[str, Any] = config_schema()
    for part in section.split("."):
        props = _object_props(schema)
        if part not in props:
            raise ConfigError("config", [f"no config section `{section}`"])
        schema = props[part]
    cfg = copy.deepcopy(dict(values or {}))
    problems = _unknown_keys(cfg, schema, _all_keys(config_schema()), prefix=f"{section}.")
    fill_defaults(cfg, schema)
    for err in jsonschema.Draft202012Validator(schema).iter_errors(cfg):
        if err.validator != "additionalProperties":
            problems.append(f"[{section}] " + _describe(err))
    if problems:
        raise ConfigError(f"config section `{section}`", problems)
    return cfg
