"""genframe's warnings go through the logger "genframe": printed by default, filtered and routed like any log."""

from __future__ import annotations

import logging

from genframe.ops import log
from genframe.storage import RunStorage


def _damaged_log(tmp_path) -> RunStorage:
    storage = RunStorage(str(tmp_path / "run"))
    storage.write_text("metrics.jsonl", '{"stage": "s", "step": 1, "loss": 1.0}\nnot json\n')
    return storage


def test_a_warning_is_printed_as_before_by_default(tmp_path, capsys):
    assert len(_damaged_log(tmp_path).read_log()) == 1
    assert capsys.readouterr().err.startswith("genframe: warning: ")


def test_an_application_filters_and_routes_genframes_warnings(tmp_path, capsys):
    logger = logging.getLogger("genframe")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handlers, level = list(logger.handlers), logger.level
    try:
        logger.setLevel(logging.ERROR)
        _damaged_log(tmp_path).read_log()
        assert capsys.readouterr().err == ""  # filtered by level
        logger.setLevel(logging.INFO)
        logger.handlers = [Collect()]  # routed elsewhere instead of standard error
        _damaged_log(tmp_path / "again").read_log()
        log.note("a note")
    finally:
        logger.handlers, _ = handlers, logger.setLevel(level)
    assert capsys.readouterr().err == "" and "skipped damaged line(s) 2" in records[0].getMessage()
    assert records[-1].levelno == logging.INFO and records[-1].getMessage() == "a note"
