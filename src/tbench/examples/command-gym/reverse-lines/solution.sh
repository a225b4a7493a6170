#!/usr/bin/env bash
set -euo pipefail
tac poem.txt > reversed.txt
