#!/bin/bash
# Offline variant of tb's template: pytest comes from the base image instead of uv.
cd /app
python3 -m pytest "$TEST_DIR/test_outputs.py" -rA -p no:cacheprovider
