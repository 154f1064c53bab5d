"""The demo's last step: the state of every sncli alert on the local Prometheus, for one job.

Waits (at most --timeout seconds) until Prometheus has scraped what the Pushgateway holds for the
job (the runs counted by ``sncli_runs_total``) and evaluated its rules once more, then prints each
alert rule of deploy/prometheus/sncli-alerts.yml: inactive, pending or firing, and for each active
alert the command and table with its summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


def pushed_runs(pushgateway: str, job: str) -> float:
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "sncli_runs_total" and s.labels.get("job") == job)


def scraped_runs(prometheus: str, job: str) -> float:
    expr = urllib.parse.quote(f'sum(sncli_runs_total{{job="{job}"}})')
    result = get(f"{prometheus}/api/v1/query?query={expr}")["result"]
    return float(result[0]["value"][1]) if result else -1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--pushgateway", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    want = pushed_runs(args.pushgateway, args.job)
    while scraped_runs(args.prometheus, args.job) != want:
        if time.monotonic() > deadline:
            print(f"Prometheus has not scraped the last push of job {args.job} within {args.timeout:.0f} s")
            return 1
        time.sleep(0.25)
    time.sleep(2.5)  # rules are evaluated every second (scripts/services.sh): one evaluation on the last scrape

    rules = [r for g in get(f"{args.prometheus}/api/v1/rules?type=alert")["groups"] for r in g["rules"]]
    for rule in sorted(rules, key=lambda r: r["name"]):
        mine = [a for a in rule.get("alerts", []) if a["labels"].get("job") == args.job]
        state = "firing" if any(a["state"] == "firing" for a in mine) else "pending" if mine else "inactive"
        print(f"  {rule['name']:<24} {state}")
        for alert in mine:
            labels = alert["labels"]
            print(f"      {alert['state']:<8} {labels.get('command', '')} {labels.get('table', '')}: "
                  f"{alert['annotations'].get('summary', '')}")
    print("  (pending: the condition holds, the alert fires once it has held for the rule's `for:` duration)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
