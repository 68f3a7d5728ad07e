#!/usr/bin/env python3
"""tool_prom: checks a document against the rules of the Prometheus text
exposition format (version 0.0.4), for `fdguard stat --prom` in
tests/tools.bats.

    tool_prom.py < FILE

The rules, as the format's documentation states them:
  - UTF-8, lines end with \\n (the last one too); empty lines are ignored;
  - "# HELP name text" (text escapes: \\\\ and \\n) and "# TYPE name type"
    (counter, gauge, histogram, summary, untyped); other "#" lines are
    comments; at most one HELP and one TYPE per metric, before its samples;
  - a sample: name, optional {label="value",...}, a value (a float, NaN,
    +Inf, -Inf), an optional timestamp (an integer);
  - metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*
    and not starting with __; label values escape only \\\\, \\" and \\n;
  - all the lines of one metric form a single group (no interleaving);
  - no two samples with the same name and label set;
  - a counter's samples carry the metric's own name.

On success it prints the families as JSON, {name: {"type", "help",
"samples": [{"labels": {...}, "value": float}]}}, and exits 0; otherwise it
prints the first violation (with the line number) and exits 1.
"""
import json
import re
import sys

METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class Bad(Exception):
    pass


def unescape(text, allowed):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in allowed:
                raise Bad("invalid escape in %r" % text)
            out.append({"\\": "\\", '"': '"', "n": "\n"}[text[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_value(text):
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise Bad("invalid value %r" % text)
    return float(text)


def parse_labels(text):
    """text starts after '{'; returns (labels, rest after '}')."""
    labels, i = {}, 0
    while True:
        if text[i:i + 1] == "}":
            return labels, text[i + 1:]
        m = LABEL.match(text, i)
        if not m:
            raise Bad("invalid label name at %r" % text[i:])
        name = m.group(0)
        if name.startswith("__"):
            raise Bad("reserved label name %r" % name)
        if name in labels:
            raise Bad("label %r twice" % name)
        i = m.end()
        if text[i:i + 2] != '="':
            raise Bad("expected =\" after label %r" % name)
        i += 2
        j = i
        while j < len(text) and text[j] != '"':
            j += 2 if text[j] == "\\" else 1
        if j >= len(text):
            raise Bad("unterminated label value")
        labels[name] = unescape(text[i:j], '\\"n')
        i = j + 1
        if text[i:i + 1] == ",":
            i += 1
        elif text[i:i + 1] != "}":
            raise Bad("expected , or } after a label value")


def check(data):
    try:
        doc = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Bad("not UTF-8: %s" % e)
    if doc and not doc.endswith("\n"):
        raise Bad("the last line does not end with a newline")
    families, order, seen_series = {}, [], set()
    current = None
    for n, line in enumerate(doc.split("\n")[:-1], 1):
        try:
            if line == "":
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    name = parts[2]
                    if not METRIC.fullmatch(name):
                        raise Bad("invalid metric name %r" % name)
                    fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                    if name not in order:
                        order.append(name)
                    elif current != name:
                        raise Bad("%s: lines of the metric are not one group" % name)
                    current = name
                    key = parts[1].lower()
                    if fam[key] is not None:
                        raise Bad("%s: second %s line" % (name, parts[1]))
                    if fam["samples"]:
                        raise Bad("%s: %s after its samples" % (name, parts[1]))
                    text = parts[3] if len(parts) > 3 else ""
                    if key == "type" and text not in TYPES:
                        raise Bad("%s: unknown type %r" % (name, text))
                    fam[key] = unescape(text, "\\n") if key == "help" else text
                continue
            m = METRIC.match(line)
            if not m:
                raise Bad("invalid metric name in %r" % line)
            name, rest = m.group(0), line[m.end():]
            labels = {}
            if rest.startswith("{"):
                labels, rest = parse_labels(rest[1:])
            fields = rest.split(" ")
            if not rest.startswith(" ") or len(fields) not in (2, 3) or fields[1] == "":
                raise Bad("expected ' VALUE [TIMESTAMP]' after the name and labels")
            value = parse_value(fields[1])
            if len(fields) == 3 and not re.fullmatch(r"-?\d+", fields[2]):
                raise Bad("invalid timestamp %r" % fields[2])
            fam = families.get(name)
            if fam is None:
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                order.append(name)
            elif current != name:
                raise Bad("%s: lines of the metric are not one group" % name)
            current = name
            series = (name, tuple(sorted(labels.items())))
            if series in seen_series:
                raise Bad("duplicate series %s%s" % (name, labels))
            seen_series.add(series)
            fam["samples"].append({"labels": labels, "value": value})
        except Bad as e:
            raise Bad("line %d: %s" % (n, e))
    return families


def main():
    try:
        families = check(sys.stdin.buffer.read())
    except Bad as e:
        print("tool_prom: %s" % e)
        return 1
    print(json.dumps(families, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
