"""One module per lifecycle operation; each takes a RuntimeContext and an
options dataclass and returns data, never prints."""

__all__: list[str] = []
