#!/bin/bash
cat > /app/stats.py <<'PY'
def median(xs):
    s = sorted(xs)
    n = len(s)
    m = n // 2
    return s[m] if n % 2 else (s[m - 1] + s[m]) / 2
PY
