"""`python -m components.grafana_dashboards DIR`: write the dashboards and the alert rules (default settings)."""

import json
import sys
from pathlib import Path

import yaml

from components.grafana_dashboards import alerting, dashboards
from stack.model import AlertSettings

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "grafana-out")
    out.mkdir(parents=True, exist_ok=True)
    for name, model in dashboards(AlertSettings()).items():
        (out / name).write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
    (out / "alerting.yaml").write_text(yaml.safe_dump(alerting(AlertSettings()), sort_keys=True))
    print(f"wrote {len(list(out.iterdir()))} files to {out}")
