"""Signal names as runc accepts them: "KILL", "SIGKILL", "9", "SIGRTMIN+3"."""

from __future__ import annotations

# _signal, not signal: signal.py's enums cost start-up time (migrate/_light.py)
import _signal as signal

from migrate.errors import UsageError

__all__ = ["parse_signal"]


def parse_signal(text: str) -> int:
    """Raises UsageError for an unknown signal."""
    t = text.strip()
    if t.isdigit():
        num = int(t)
        # 0 checks that the target exists (kill(2)); runc passes it through.
        if 0 <= num < signal.NSIG:
            return num
        raise UsageError(f"unknown signal {text!r}")
    name = t.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    for base, value in (("SIGRTMIN", signal.SIGRTMIN), ("SIGRTMAX", signal.SIGRTMAX)):
        if name.startswith(base):
            rest = name[len(base):]
            try:
                off = int(rest) if rest else 0
            except ValueError:
                break
            num = value + off
            if signal.SIGRTMIN <= num <= signal.SIGRTMAX:
                return num
            break
    # Signal names are SIG plus letters and digits; the module's other
    # SIG_* names (SIG_DFL, SIG_BLOCK...) are not signals.
    value = getattr(signal, name, None) if name[3:].isalnum() else None
    if not isinstance(value, int):
        raise UsageError(f"unknown signal {text!r}")
    return value
