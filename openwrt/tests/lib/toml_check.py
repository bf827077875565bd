#!/usr/bin/env python3
"""TOML assertions for the OpenWrt shell tests (python3 tomllib, no third-party modules).

  toml_check.py subset FILE JSON       FILE parses and contains JSON (tables recursively; lists
                                       element-wise with equal length)
  toml_check.py keys-within FILE REF   every key FILE uses (per table / array-of-tables) also occurs in REF
"""
import json
import sys
import tomllib


def load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def subset(want, got, path="$"):
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: expected a table, got {got!r}"]
        errs = []
        for k, v in want.items():
            if k not in got:
                errs.append(f"{path}.{k}: missing")
            else:
                errs += subset(v, got[k], f"{path}.{k}")
        return errs
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        errs = []
        for i, (w, g) in enumerate(zip(want, got)):
            errs += subset(w, g, f"{path}[{i}]")
        return errs
    if want != got or type(want) is not type(got):
        return [f"{path}: expected {want!r}, got {got!r}"]
    return []


def keys(doc, prefix=""):
    out = set()
    for k, v in doc.items():
        name = f"{prefix}{k}"
        out.add(name)
        if isinstance(v, dict):
            out |= keys(v, name + ".")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                out |= keys(item, name + "[].")
    return out


def main():
    cmd, path, arg = sys.argv[1:4]
    doc = load(path)
    if cmd == "subset":
        errs = subset(json.loads(arg), doc)
    elif cmd == "keys-within":
        unknown = keys(doc) - keys(load(arg))
        errs = [f"key {k} does not occur in {arg}" for k in sorted(unknown)]
    else:
        errs = [f"unknown command {cmd}"]
    for e in errs:
        print(e, file=sys.stderr)
    sys.exit(1 if errs else 0)


if __name__ == "__main__":
    main()
