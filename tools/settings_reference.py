"""Write docs/settings.md from the settings classes (`make settings-doc`); `--check` exits 1 when stale."""

from __future__ import annotations

import argparse
import sys

from core.settings import REPO_ROOT, Settings, reference_markdown
from model_service.settings import ServiceSettings
from monitoring.settings import MonitorSettings
from operations.backup import BackupSettings
from scoring.settings import ScoreSettings
from training.settings import TrainingSettings

CLASSES: list[type[Settings]] = [
    Settings,
    TrainingSettings,
    ServiceSettings,
    MonitorSettings,
    ScoreSettings,
    BackupSettings,
]
DOC = REPO_ROOT / "docs" / "settings.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.settings_reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/settings.md is not current")
    args = parser.parse_args(argv)
    text = reference_markdown(CLASSES)
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print("docs/settings.md is stale: run `make settings-doc`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
