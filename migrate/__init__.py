"""migrate: a container runtime built for checkpoint/restore and live migration."""

__all__ = ["__version__"]
__version__ = "0.1.0"
