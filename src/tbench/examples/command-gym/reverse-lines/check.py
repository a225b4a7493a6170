"""Pass when reversed.txt holds poem.txt's lines last first, and poem.txt is untouched."""

import pathlib
import sys

POEM = ["Roses are red", "Violets are blue", "Tests are green", "And so are you"]

poem = pathlib.Path("poem.txt")
out = pathlib.Path("reversed.txt")
if not poem.is_file() or poem.read_text().splitlines() != POEM:
    sys.exit("poem.txt was changed or removed")
if not out.is_file():
    sys.exit("reversed.txt is missing")
got = out.read_text().splitlines()
if got != POEM[::-1]:
    sys.exit(f"reversed.txt holds {got!r}, expected {POEM[::-1]!r}")
print("ok")
