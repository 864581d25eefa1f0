#!/usr/bin/env python3
"""Writes a text file as a C string literal: embed.py INPUT OUTPUT.

Used at build time to carry compiler/task_stub.c inside libntc, so that
`ntc compile` can write it next to a task without finding source files."""
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write("/* generated from %s by embed.py */\n" % sys.argv[1].rsplit("/", 1)[-1])
    for line in text.splitlines(keepends=True):
        esc = line.replace("\\", "\\\\").replace("?", "\\?").replace('"', '\\"').replace("\n", "\\n")
        out.write('"%s"\n' % esc)
