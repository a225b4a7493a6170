#!/bin/bash
python3 - <<'PY'
import csv
from collections import defaultdict
totals = defaultdict(int)
with open("/app/sales.csv") as fh:
    for row in csv.DictReader(fh):
        totals[row["region"]] += int(row["amount"])
with open("/app/report.csv", "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["region", "total"])
    for region in sorted(totals):
        w.writerow([region, totals[region]])
PY
