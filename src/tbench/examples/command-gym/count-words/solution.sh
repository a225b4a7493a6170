#!/usr/bin/env bash
set -euo pipefail
wc -w < text.txt | tr -d ' ' > count.txt
