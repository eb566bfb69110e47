#!/usr/bin/env python3
"""Checks that the hand-written header declares every `extern "C"` function of capi/src with
the same parameter and return types, and that its structs have the Rust fields in the same
order with the same types. (The linker checks names only; this checks the types.)

Usage: python3 capi/tests/check_abi.py   (exit 1 on any difference)
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HEADER = open(os.path.join(ROOT, "include", "softmax_kernels.h")).read()
SRC = {n: open(os.path.join(ROOT, "src", n)).read()
       for n in os.listdir(os.path.join(ROOT, "src")) if n.endswith(".rs")}

RUST_STRUCTS = {"SkCeOptions": "sk_ce_options", "SkCeOutputs": "sk_ce_outputs",
                "SkCeStats": "sk_ce_stats", "SkSgdOptions": "sk_sgd_options",
                "SkSgdOptimizer": "sk_sgd_optimizer", "SkOutputLayer": "sk_output_layer",
                "SkLinearCeOptions": "sk_linear_ce_options",
                "SkTokenOptions": "sk_token_options", "SkTokenOutputs": "sk_token_outputs",
                "SkTokenGrads": "sk_token_grads", "SkTokenSaved": "sk_token_saved",
                "SkRowState": "sk_row_state"}
SCALARS = {"f32": "float", "f64": "double", "usize": "size_t", "i32": "int32_t",
           "u32": "uint32_t", "i64": "int64_t", "u64": "uint64_t", "c_char": "char",
           "SkStatus": "sk_status", "()": "void"}


def rust_type(t):
    """A Rust FFI type as the C type it must be declared as (normalized spelling)."""
    t = t.strip()
    m = re.match(r"\*(const|mut)\s+(.*)", t)
    if m:
        inner = rust_type(m.group(2))
        if inner.endswith("*"):
            return f"{inner} {'const ' if m.group(1) == 'const' else ''}*".replace("  ", " ")
        return f"{'const ' if m.group(1) == 'const' else ''}{inner} *"
    return SCALARS.get(t) or RUST_STRUCTS[t]


def c_type(t):
    t = re.sub(r"\s+", " ", t.strip())
    t = re.sub(r"\s*\*", " *", t).replace("* *", "**").replace("**", "* *")
    return t


def norm(t):
    return re.sub(r"\s+", "", t)


def expand_macros(text):
    """Expands `macro_rules!` invocations whose body defines extern "C" functions."""
    for m in re.finditer(r"macro_rules!\s+(\w+)\s*\{\s*\(([^)]*)\)\s*=>\s*\{", text):
        name, params = m.group(1), re.findall(r"\$(\w+):\w+", m.group(2))
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[m.end():i - 1]
        for inv in re.finditer(rf"\b{name}!\(([^)]*)\);", text):
            args = [a.strip() for a in inv.group(1).split(",") if a.strip()]
            out = body
            for p, a in sorted(zip(params, args), key=lambda pa: -len(pa[0])):
                out = out.replace(f"${p}", a)
            out = out.replace("stringify!(", "(")
            text += "\n" + out
    return text


def rust_functions():
    fns = {}
    for text in SRC.values():
        text = expand_macros(text)
        for m in re.finditer(r'pub (?:unsafe )?extern "C" fn (\w+)\s*\(([^)]*)\)\s*(?:->\s*([^{]+))?\{',
                             text):
            name, params, ret = m.group(1), m.group(2), (m.group(3) or "()").strip()
            types = [rust_type(p.split(":", 1)[1]) for p in params.split(",") if ":" in p]
            fns[name] = (rust_type(ret), types)
    return fns


def c_functions():
    body = re.sub(r"/\*.*?\*/", "", HEADER, flags=re.S)
    fns = {}
    for m in re.finditer(r"([A-Za-z_][\w \*]*?)\b(sk_\w+)\s*\(([^)]*)\);", body):
        ret, name, params = c_type(m.group(1)), m.group(2), m.group(3).strip()
        types = []
        if params != "void":
            for p in params.split(","):
                p = p.strip()
                pm = re.match(r"(.*?)(\w+)$", p)
                types.append(c_type(pm.group(1)))
        fns[name] = (ret, types)
    return fns


def rust_structs():
    out = {}
    for text in SRC.values():
        for m in re.finditer(r"#\[repr\(C\)\][^{]*?pub struct (\w+) \{(.*?)\n\}", text, re.S):
            fields = re.findall(r"pub (\w+): ([^,\n]+),", m.group(2))
            out[RUST_STRUCTS[m.group(1)]] = [(f, rust_type(t)) for f, t in fields]
    return out


def c_structs():
    out = {}
    body = re.sub(r"/\*.*?\*/", "", HEADER, flags=re.S)
    for m in re.finditer(r"typedef struct (\w+) \{(.*?)\} \1;", body, re.S):
        fields = []
        for decl in m.group(2).split(";"):
            decl = re.sub(r"\s+", " ", decl).strip()
            if decl:
                dm = re.match(r"(.*?)(\w+)$", decl)
                fields.append((dm.group(2), c_type(dm.group(1))))
        out[m.group(1)] = fields
    return out


errors = []
rf, cf = rust_functions(), c_functions()
for name in sorted(set(rf) | set(cf)):
    if name not in cf:
        errors.append(f"{name}: exported by the library, not declared in the header")
    elif name not in rf:
        errors.append(f"{name}: declared in the header, not defined in capi/src")
    else:
        (rr, rp), (cr, cp) = rf[name], cf[name]
        if norm(rr) != norm(cr):
            errors.append(f"{name}: returns {cr} in C, {rr} in Rust")
        if len(rp) != len(cp):
            errors.append(f"{name}: {len(cp)} parameters in C, {len(rp)} in Rust")
        for i, (r, c) in enumerate(zip(rp, cp)):
            if norm(r) != norm(c):
                errors.append(f"{name}: parameter {i + 1} is `{c}` in C, `{r}` in Rust")
rs, cs = rust_structs(), c_structs()
for name in sorted(set(rs) | set(cs)):
    if rs.get(name) != cs.get(name) and [(f, norm(t)) for f, t in rs.get(name, [])] != \
            [(f, norm(t)) for f, t in cs.get(name, [])]:
        errors.append(f"struct {name}: C {cs.get(name)} != Rust {rs.get(name)}")

# sk_row_state is also the crate's own `#[repr(C)] RowState` (the library casts arrays of one
# to the other; capi/src/shard.rs asserts the offsets at compile time): same fields, same types.
CRATE_SHARD = os.path.join(ROOT, "..", "src", "shard.rs")
m = re.search(r"#\[repr\(C\)\][^{]*?pub struct RowState \{(.*?)\n\}", open(CRATE_SHARD).read(), re.S)
if m is None:
    errors.append("struct RowState: no `#[repr(C)] pub struct RowState` in src/shard.rs")
else:
    crate_fields = [(f, norm(rust_type(t))) for f, t in re.findall(r"pub (\w+): ([^,\n]+),",
                                                                    m.group(1))]
    if crate_fields != [(f, norm(t)) for f, t in cs.get("sk_row_state", [])]:
        errors.append(f"struct sk_row_state: C {cs.get('sk_row_state')} != the crate's "
                      f"RowState {crate_fields}")

for e in errors:
    print("ABI mismatch:", e, file=sys.stderr)
print(f"check_abi: {len(rf)} functions and {len(rs)} structs compared, {len(errors)} mismatches")
sys.exit(1 if errors else 0)
