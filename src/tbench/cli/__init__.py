"""Command line: `tbench` (typer app) and `tbench-iterate` (the seed's CLI)."""
