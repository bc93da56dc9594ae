"""Content pre-copy: pre-copy that decides what changed by hashing memory
instead of by the kernel's soft-dirty bit (issue 14).

``scan`` reads and hashes a running process's memory, ``records`` is the
page stream on the wire, ``mirror`` is the source's picture of what the
destination holds, ``store`` keeps the pages at the destination and
rebuilds CRIU's page images from them.
"""

__all__: list[str] = []
