"""What every trainer (LLM or classic RL) writes around its loop: ``environment.json``, the trackers
and, at the end, the HTML report. ``logging`` is the config's logging section (``report_to``,
``tracker_options``, ``report``); ``config`` is the whole resolved config, logged once by each tracker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grpokit.tracking.logger import RunLogger


def open_run_logger(run_dir: Path, logging: Any, config: Any, *, start_step: int = 0) -> RunLogger:
    """Record the software versions once, then open ``metrics.jsonl`` and the configured trackers.

    ``start_step``: the step a resumed run continues from; TensorBoard then drops the events an earlier,
    killed process logged after it (``metrics.jsonl`` is rewound by the trainer).
    """
    from grpokit.tracking.report import current_environment

    env_path = Path(run_dir) / "environment.json"
    if not env_path.exists():  # a resumed run keeps the versions it started with
        env_path.write_text(json.dumps(current_environment(), indent=2) + "\n", encoding="utf-8")
    options = {name: dict(values) for name, values in logging.tracker_options.items()}
    if start_step and "tensorboard" in logging.report_to:
        options.setdefault("tensorboard", {}).setdefault("purge_step", start_step + 1)
    return RunLogger(run_dir, trackers=logging.report_to, config=config, tracker_options=options)


def finish_run_report(run_dir: Path, logging: Any) -> Path | None:
    """Write ``RUN_DIR/report.html`` when ``logging.report`` is on.

    The run itself is complete by now (final checkpoint written), so a report failure is reported on
    stderr with its cause and ``grpokit report RUN_DIR`` as the retry, not raised.
    """
    if not logging.report:
        return None
    from grpokit.tracking.report import write_report

    try:
        return write_report(run_dir)
    except Exception as err:  # noqa: BLE001  (the trained model is already saved; say what failed and how to retry)
        print(
            f"warning: could not write the run report ({type(err).__name__}: {err}); "
            f"retry with: grpokit report {run_dir}",
            file=sys.stderr,
        )
        return None
