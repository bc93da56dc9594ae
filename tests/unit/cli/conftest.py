import logging

import pytest


@pytest.fixture(autouse=True)
def clean_logging():
    """main() configures the "migrate" logger; undo it after each test."""
    logger = logging.getLogger("migrate")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in logger.handlers:
        if h not in saved[0]:
            h.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
