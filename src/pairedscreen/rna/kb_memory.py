"""kb's sort memory and the kb jobs' memory resource (no heavy imports: the planner reads it)."""

from __future__ import annotations

KB_PROCESS_MB = 1024  # kb's own process beside its sort buffer


def kb_mem_mb(sort_memory: str) -> int:
    """The kb jobs' ``mem_mb`` resource for ``rna.sort_memory`` ('2G' -> 2048 + :data:`KB_PROCESS_MB`)."""
    unit = {"K": 1 / 1024, "M": 1, "G": 1024}[sort_memory[-1]]
    return int(float(sort_memory[:-1]) * unit) + KB_PROCESS_MB


def sort_memory(mem_mb: int) -> str:
    """kb's ``-m`` for a job granted ``mem_mb`` (its resource): what the process leaves of it, at least
    256M. The sort memory comes from the job's resources, so raising it (``--set-resources``, a profile, or
    ``rna.sort_memory``) reruns nothing."""
    return f"{max(int(mem_mb) - KB_PROCESS_MB, 256)}M"
