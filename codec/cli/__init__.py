"""Thin click commands: parse, call a stage, report. Shared error handling lives in `common`."""
