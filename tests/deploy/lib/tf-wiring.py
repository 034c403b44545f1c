#!/usr/bin/env python3
"""Static wiring check of Terraform modules that cannot be `terraform validate`d offline
(their providers are unreachable): for every directory given,
  - every var.NAME used is declared as a variable, and every declared variable is used;
  - every variable has a description and a type;
  - every `module` block calling a local module passes only variables that module declares,
    and passes all of its required ones (those without a default);
  - every module.NAME.OUTPUT used exists as an output of that module.
HCL is read with a small brace-aware scanner, enough for this repository's style (terraform
fmt has already parsed the files). Exit 1 on any problem.
Usage: tf-wiring.py DIR...
"""
import os
import re
import sys


def strip_comments(text):
    out, i, n = [], 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == '\\' and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif c == '#' or text.startswith('//', i):
            while i < n and text[i] != '\n':
                i += 1
            continue
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            i = n if j < 0 else j + 2
            continue
        else:
            out.append(c)
        i += 1
    return ''.join(out)


def blocks(text, kind):
    """Yields (labels, body) for top-level blocks `kind "a" "b" { ... }`."""
    for m in re.finditer(r'^%s((?:\s+"[^"]*")*)\s*\{' % kind, text, re.M):
        labels = re.findall(r'"([^"]*)"', m.group(1))
        depth, i = 1, m.end()
        while depth and i < len(text):
            if text[i] == '{':
                depth += 1
            elif text[i] == '}':
                depth -= 1
            i += 1
        yield labels, text[m.end():i - 1]


def top_level_attrs(body):
    """Attribute names at depth 0 of a block body."""
    names, depth = [], 0
    for line in body.split('\n'):
        if depth == 0:
            m = re.match(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=', line)
            if m:
                names.append(m.group(1))
        depth += line.count('{') + line.count('[') + line.count('(') - line.count('}') - line.count(']') - line.count(')')
    return names


def load(d):
    text = ''
    for f in sorted(os.listdir(d)):
        if f.endswith('.tf'):
            with open(os.path.join(d, f)) as fh:
                text += strip_comments(fh.read()) + '\n'
    variables = {}
    for labels, body in blocks(text, 'variable'):
        attrs = top_level_attrs(body)
        variables[labels[0]] = {'default': 'default' in attrs, 'description': 'description' in attrs, 'type': 'type' in attrs}
    outputs = [labels[0] for labels, _ in blocks(text, 'output')]
    modules = {labels[0]: body for labels, body in blocks(text, 'module')}
    return text, variables, outputs, modules


problems = []
for d in sys.argv[1:]:
    d = os.path.normpath(d)
    text, variables, outputs, modules = load(d)
    used = set(re.findall(r'\bvar\.([A-Za-z_][A-Za-z0-9_-]*)', text))
    for v in sorted(used - set(variables)):
        problems.append(f'{d}: var.{v} is used but not declared')
    for v in sorted(set(variables) - used):
        problems.append(f'{d}: variable "{v}" is declared but never used')
    for v, info in sorted(variables.items()):
        if not info['description']:
            problems.append(f'{d}: variable "{v}" has no description')
        if not info['type']:
            problems.append(f'{d}: variable "{v}" has no type')
    for name, body in modules.items():
        src = re.search(r'^\s*source\s*=\s*"([^"]+)"', body, re.M)
        if not src or not src.group(1).startswith('.'):
            continue
        sub = os.path.normpath(os.path.join(d, src.group(1)))
        _, sub_vars, sub_outputs, _ = load(sub)
        passed = set(top_level_attrs(body)) - {'source', 'version', 'providers', 'count', 'for_each', 'depends_on'}
        for a in sorted(passed - set(sub_vars)):
            problems.append(f'{d}: module "{name}" passes {a}, which {sub} does not declare')
        for v, info in sorted(sub_vars.items()):
            if not info['default'] and v not in passed:
                problems.append(f'{d}: module "{name}" does not pass required variable {v} of {sub}')
        for o in sorted(set(re.findall(r'\bmodule\.%s\.([A-Za-z_][A-Za-z0-9_-]*)' % re.escape(name), text))):
            if o not in sub_outputs:
                problems.append(f'{d}: module.{name}.{o} is not an output of {sub}')
        print(f'ok   {d}: module "{name}" -> {sub}: {len(passed)} inputs match its variables')
    print(f'ok   {d}: {len(variables)} variables declared, described, typed and used' if not any(p.startswith(d + ':') for p in problems) else f'FAIL {d}')

for p in problems:
    print(f'FAIL {p}')
sys.exit(1 if problems else 0)
