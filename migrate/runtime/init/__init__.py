"""The in-container side of the launcher: ``standard`` for a new container,
``setns`` for a process joining one (exec)."""

__all__: list[str] = []
