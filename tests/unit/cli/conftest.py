import logging

import pytest

from migrate import _log


@pytest.fixture(autouse=True)
def clean_logging():
    """main() configures the "migrate" logger (or migrate/_log.py's writer,
    for the hot commands); undo it after each test."""
    logger = logging.getLogger("migrate")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    _log.reset()
    for h in logger.handlers:
        if h not in saved[0]:
            h.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
