#!/bin/bash
# Scores two aspects separately in reward.json; full credit needs both.
mkdir -p /logs/verifier
python3 - <<'PY'
import csv, json
rewards = {"reward": 0.0, "header": 0.0}
try:
    rows = list(csv.reader(open("/app/report.csv")))
    rewards["header"] = 1.0 if rows and rows[0] == ["region", "total"] else 0.0
    ok = rows[1:] == [["east", "3"], ["north", "17"], ["south", "6"]]
    rewards["reward"] = 1.0 if ok and rewards["header"] else 0.0
except OSError as exc:
    print("no report:", exc)
print(rewards)
json.dump(rewards, open("/logs/verifier/reward.json", "w"))
PY
