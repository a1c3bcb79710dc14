"""Generate the Rust and C views of the ABI from :mod:`copra.abi.spec`.

``python -m copra.abi.gen`` rewrites ``user/libcopra/src/abi.rs`` and
``include/copra/abi.h``; ``--check`` only compares and exits 1 when a file is stale.
``tests/unit/test_abi_generated.py`` runs the same comparison.

What is generated, mechanically and for every declaration of the spec module:

- each ``IntEnum`` becomes a Rust ``#[repr]`` enum (``from_raw``/``raw``/``name``) and a
  group of C ``#define``s named ``COPRA_<ENUM>_<MEMBER>``;
- each ``IntFlag`` becomes a Rust bit-set newtype (``bits``/``contains``/``|``) and
  C ``#define``s;
- each upper-case int constant becomes a Rust ``u64`` (``i64`` when negative) constant
  and a C ``#define``; a string becomes a ``&str`` and a string macro; a tuple of
  strings becomes a Rust array and a C comment;
- each :class:`~copra.abi.spec.Struct` in ``spec.STRUCTS`` becomes a Rust ``#[repr(C)]``
  struct and a C struct, both with compile-time assertions of size and offsets.

Names are kept exactly as the spec spells them (``Errno::EINVAL``,
``SeekMode::ABSOLUTE``), so one grep finds a definition in all three languages.
Documentation comes from the spec's source: class docstrings, ``#:`` comments above an
assignment and comments trailing it.

The generator refuses (``ValueError``) a struct whose fields leave a gap, overlap, are
misaligned or do not add up to the declared size: the rule for every structure shared
between user and kernel (fixed widths, explicit padding) is checked here rather than
trusted.
"""

from __future__ import annotations

import argparse
import ast
import enum
import inspect
import io
import re
import sys
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from copra.abi import spec

GENERATED_LINE = "generated from src/copra/abi/spec.py by copra.abi.gen; do not edit"

#: Output paths, relative to the repository root.
RUST_PATH = Path("user/libcopra/src/abi.rs")
C_PATH = Path("include/copra/abi.h")

#: Scalar field types a shared structure may use: (size in bytes, Rust type, C type).
SCALARS: dict[str, tuple[int, str, str]] = {
    "u8": (1, "u8", "uint8_t"),
    "u16": (2, "u16", "uint16_t"),
    "u32": (4, "u32", "uint32_t"),
    "u64": (8, "u64", "uint64_t"),
    "i8": (1, "i8", "int8_t"),
    "i16": (2, "i16", "int16_t"),
    "i32": (4, "i32", "int32_t"),
    "i64": (8, "i64", "int64_t"),
}

_ARRAY = re.compile(r"^(\w+)\[(\d+)\]$")
_U32_MAX = (1 << 32) - 1


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Member:
    name: str
    value: int
    doc: str
    hexadecimal: bool  #: spelled in hex: the source does, or the set is flags or large


@dataclass(frozen=True)
class EnumDef:
    name: str
    doc: str
    is_flag: bool
    members: tuple[Member, ...]

    @property
    def repr_type(self) -> str:
        """The Rust integer type that holds every member."""
        values = [m.value for m in self.members]
        if self.is_flag:
            return "u64"
        if any(v < 0 for v in values):
            return "i64"
        if any(v > _U32_MAX for v in values):
            return "u64"
        return "u32"


@dataclass(frozen=True)
class Constant:
    name: str
    value: int | str | tuple[str, ...]
    doc: str
    hexadecimal: bool = False  #: spelled in hex: the source does, or the value is large


@dataclass(frozen=True)
class FieldLayout:
    name: str
    scalar: str  #: key of SCALARS
    count: int | None  #: array length, None for a scalar
    offset: int
    size: int
    doc: str


@dataclass(frozen=True)
class StructLayout:
    name: str
    size: int
    align: int
    doc: str
    fields: tuple[FieldLayout, ...]


@dataclass(frozen=True)
class Model:
    enums: tuple[EnumDef, ...]
    constants: tuple[Constant, ...]
    structs: tuple[StructLayout, ...]


# ------------------------------------------------------------------ reading the spec


@dataclass(frozen=True)
class _SourceDocs:
    """Documentation found in the spec's source text."""

    #: (class name or "" for module level, attribute name) -> comment text
    attributes: dict[tuple[str, str], str]
    #: class name -> docstring
    classes: dict[str, str]
    #: (owner, attribute) whose value the source spells as a hexadecimal literal
    hex_literals: frozenset[tuple[str, str]]


def _comment_text(comment: str) -> str:
    text = comment[1:]
    if text.startswith(":"):
        text = text[1:]
    return text.strip()


def _read_source_docs(source: str) -> _SourceDocs:
    comments: dict[int, str] = {}  # line -> comment token text
    code_lines: set[int] = set()  # lines holding tokens other than comments
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
        elif tok.type not in (
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            code_lines.add(tok.start[0])

    def doc_for(line: int) -> str:
        trailing = comments.get(line)
        if trailing is not None and line in code_lines:
            return _comment_text(trailing)
        above: list[str] = []
        n = line - 1
        while n in comments and n not in code_lines and comments[n].startswith("#:"):
            above.insert(0, _comment_text(comments[n]))
            n -= 1
        return " ".join(above)

    attributes: dict[tuple[str, str], str] = {}
    classes: dict[str, str] = {}
    hex_literals: set[tuple[str, str]] = set()

    def visit(body: list[ast.stmt], owner: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not owner:
                classes[node.name] = inspect.cleandoc(ast.get_docstring(node) or "")
                visit(node.body, node.name)
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if not isinstance(node, ast.Assign | ast.AnnAssign):
                continue
            literal = ast.get_source_segment(source, node.value) if node.value else None
            for target in targets:
                if isinstance(target, ast.Name):
                    attributes[(owner, target.id)] = doc_for(node.lineno)
                    if literal is not None and literal.lower().startswith("0x"):
                        hex_literals.add((owner, target.id))

    visit(ast.parse(source).body, "")
    return _SourceDocs(attributes, classes, frozenset(hex_literals))


def _is_public_constant(name: str) -> bool:
    return name.isupper() and not name.startswith("_")


def _layout(struct: spec.Struct) -> StructLayout:
    fields: list[FieldLayout] = []
    cursor = 0
    align = 1
    for f in struct.fields:
        match = _ARRAY.match(f.ctype)
        scalar, count = (match.group(1), int(match.group(2))) if match else (f.ctype, None)
        if scalar not in SCALARS:
            raise ValueError(f"{struct.name}.{f.name}: unsupported field type {f.ctype!r}")
        width = SCALARS[scalar][0]
        size = width * (count if count is not None else 1)
        if f.offset != cursor:
            kind = "gap before" if f.offset > cursor else "overlap at"
            raise ValueError(
                f"{struct.name}: {kind} {f.name} (offset {f.offset}, expected {cursor}); "
                "declare padding as an explicit field"
            )
        if f.offset % width:
            raise ValueError(f"{struct.name}.{f.name}: offset {f.offset} not {width}-aligned")
        align = max(align, width)
        fields.append(FieldLayout(f.name, scalar, count, f.offset, size, f.doc))
        cursor += size
    if cursor != struct.size:
        raise ValueError(f"{struct.name}: fields end at {cursor}, declared size {struct.size}")
    if struct.size % align:
        raise ValueError(f"{struct.name}: size {struct.size} not a multiple of alignment {align}")
    return StructLayout(struct.name, struct.size, align, struct.doc, tuple(fields))


def collect(module: ModuleType = spec) -> Model:
    """Everything in *module* that the generated files declare, in source order."""
    docs = _read_source_docs(inspect.getsource(module))
    enums: list[EnumDef] = []
    constants: list[Constant] = []
    for name, value in vars(module).items():
        if (
            isinstance(value, type)
            and issubclass(value, enum.IntEnum | enum.IntFlag)
            and value.__module__ == module.__name__
        ):
            items = [(m_name, int(m_value)) for m_name, m_value in value.__members__.items()]
            all_hex = issubclass(value, enum.IntFlag) or any(v > 0xFFFF for _, v in items)
            members = tuple(
                Member(
                    m_name,
                    m_value,
                    docs.attributes.get((name, m_name), ""),
                    all_hex or (name, m_name) in docs.hex_literals,
                )
                for m_name, m_value in items
            )
            enums.append(
                EnumDef(name, docs.classes.get(name, ""), issubclass(value, enum.IntFlag), members)
            )
        elif not _is_public_constant(name) or isinstance(value, type):
            continue
        elif isinstance(value, bool):
            raise ValueError(f"{name}: booleans are not part of the ABI vocabulary")
        elif isinstance(value, int):
            hexadecimal = value > 0xFFFF or ("", name) in docs.hex_literals
            constants.append(
                Constant(name, value, docs.attributes.get(("", name), ""), hexadecimal)
            )
        elif isinstance(value, str):
            constants.append(Constant(name, value, docs.attributes.get(("", name), "")))
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            constants.append(Constant(name, tuple(value), docs.attributes.get(("", name), "")))
        elif isinstance(value, spec.Struct) or (
            isinstance(value, tuple) and all(isinstance(v, spec.Struct) for v in value)
        ):
            continue  # structures come from STRUCTS, in its order
        else:
            raise ValueError(f"{name}: no generator rule for {type(value).__name__}")
    structs = tuple(_layout(s) for s in module.STRUCTS)
    return Model(tuple(enums), tuple(constants), structs)


# ------------------------------------------------------------------------ helpers


def _snake(camel: str) -> str:
    """``DirEnt`` -> ``dir_ent``, ``MapFlag`` -> ``map_flag``, ``IOPort`` -> ``io_port``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", camel)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


def _number(value: int, hexadecimal: bool) -> str:
    return f"{value:#x}" if hexadecimal and value >= 0 else str(value)


def _rust_number(value: int, hexadecimal: bool) -> str:
    text = _number(value, hexadecimal)
    if text.startswith("0x") and len(text) > 6:
        digits = text[2:]
        groups: list[str] = []
        while digits:
            groups.insert(0, digits[-4:])
            digits = digits[:-4]
        text = "0x" + "_".join(groups)
    return text


def _rust_doc(doc: str, indent: str = "") -> list[str]:
    return [f"{indent}///{(' ' + line) if line else ''}" for line in doc.splitlines()]


def _c_comment(doc: str) -> str:
    return doc.replace("*/", "* /").replace("\n", " ")


# --------------------------------------------------------------------------- Rust


_RUST_PRELUDE = f"""\
//! The copra ABI: syscall numbers, errors, flags, limits and shared structures.
//!
//! {GENERATED_LINE}
//!
//! Every name is spelled as in the spec, so `Errno::EINVAL` here is `Errno.EINVAL`
//! there and `COPRA_ERRNO_EINVAL` in `include/copra/abi.h`.

#![allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)]

/// A syscall number: class in bits 63:32, index in bits 31:0 (upstream's scheme).
pub const fn sysno(class: u32, index: u32) -> u64 {{
    ((class as u64) << 32) | index as u64
}}
"""


def _rust_enum(e: EnumDef) -> list[str]:
    ty = e.repr_type
    out = ["", *_rust_doc(e.doc)]
    out += [f"#[repr({ty})]", "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]"]
    out.append(f"pub enum {e.name} {{")
    for m in e.members:
        out += _rust_doc(m.doc, "    ")
        out.append(f"    {m.name} = {_rust_number(m.value, m.hexadecimal)},")
    out.append("}")
    out.append("")
    out.append(f"impl {e.name} {{")
    out.append("    /// Every member, in declaration order.")
    out.append(f"    pub const ALL: [Self; {len(e.members)}] = [")
    out += [f"        Self::{m.name}," for m in e.members]
    out.append("    ];")
    out.append("")
    out.append("    /// The member whose value is `value`, if any.")
    out.append(f"    pub const fn from_raw(value: {ty}) -> Option<Self> {{")
    out.append("        match value {")
    for m in e.members:
        out.append(f"            {_rust_number(m.value, m.hexadecimal)} => Some(Self::{m.name}),")
    out.append("            _ => None,")
    out.append("        }")
    out.append("    }")
    out.append("")
    out.append("    /// The member's value.")
    out.append(f"    pub const fn raw(self) -> {ty} {{")
    out.append(f"        self as {ty}")
    out.append("    }")
    out.append("")
    out.append("    /// The member's name as the spec spells it.")
    out.append("    pub const fn name(self) -> &'static str {")
    out.append("        match self {")
    for m in e.members:
        out.append(f'            Self::{m.name} => "{m.name}",')
    out.append("        }")
    out.append("    }")
    out.append("}")
    return out


def _rust_flags(e: EnumDef) -> list[str]:
    every = 0
    for m in e.members:
        every |= m.value
    n = e.name
    out = ["", *_rust_doc(e.doc)]
    out.append("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]")
    out.append(f"pub struct {n}(u64);")
    out.append("")
    out.append(f"impl {n} {{")
    for m in e.members:
        out += _rust_doc(m.doc, "    ")
        out.append(f"    pub const {m.name}: Self = Self({_rust_number(m.value, True)});")
    out += [
        "    /// No bit set.",
        "    pub const EMPTY: Self = Self(0);",
        "    /// Every defined bit.",
        f"    pub const ALL: Self = Self({_rust_number(every, True)});",
        "",
        "    /// The raw bits, as passed in a syscall register.",
        "    pub const fn bits(self) -> u64 {",
        "        self.0",
        "    }",
        "",
        "    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).",
        "    pub const fn from_bits_retain(bits: u64) -> Self {",
        "        Self(bits)",
        "    }",
        "",
        "    /// Whether every bit of `other` is set in `self`.",
        "    pub const fn contains(self, other: Self) -> bool {",
        "        self.0 & other.0 == other.0",
        "    }",
        "",
        "    /// The bits set in either.",
        "    pub const fn union(self, other: Self) -> Self {",
        "        Self(self.0 | other.0)",
        "    }",
        "}",
        "",
        f"impl core::ops::BitOr for {n} {{",
        "    type Output = Self;",
        "    fn bitor(self, other: Self) -> Self {",
        "        self.union(other)",
        "    }",
        "}",
        "",
        f"impl core::ops::BitOrAssign for {n} {{",
        "    fn bitor_assign(&mut self, other: Self) {",
        "        *self = self.union(other);",
        "    }",
        "}",
    ]
    return out


def _rust_constant(c: Constant) -> list[str]:
    out = _rust_doc(c.doc)
    if isinstance(c.value, tuple):
        items = ", ".join(f'"{v}"' for v in c.value)
        out.append(f"pub const {c.name}: [&str; {len(c.value)}] = [{items}];")
    elif isinstance(c.value, str):
        out.append(f'pub const {c.name}: &str = "{c.value}";')
    else:
        ty = "i64" if c.value < 0 else "u64"
        out.append(f"pub const {c.name}: {ty} = {_rust_number(c.value, c.hexadecimal)};")
    return out


def _rust_field_type(f: FieldLayout) -> str:
    ty = SCALARS[f.scalar][1]
    return f"[{ty}; {f.count}]" if f.count is not None else ty


def _rust_struct(s: StructLayout) -> list[str]:
    out = ["", *_rust_doc(s.doc)]
    out += [
        "#[repr(C)]",
        "#[derive(Clone, Copy, PartialEq, Eq)]",
        f"pub struct {s.name} {{",
    ]
    for f in s.fields:
        out += _rust_doc(f.doc, "    ")
        out.append(f"    pub {f.name}: {_rust_field_type(f)},")
    out.append("}")
    out.append("")
    out.append(f"impl {s.name} {{")
    out.append("    /// Size in bytes, as declared in the spec.")
    out.append(f"    pub const SIZE: usize = {s.size};")
    out.append("")
    out.append("    /// Every byte zero.")
    out.append("    pub const fn zeroed() -> Self {")
    out.append("        Self {")
    for f in s.fields:
        zero = f"[0; {f.count}]" if f.count is not None else "0"
        out.append(f"            {f.name}: {zero},")
    out.append("        }")
    out.append("    }")
    out.append("}")
    out.append("")
    out.append(f"const _: () = assert!(core::mem::size_of::<{s.name}>() == {s.size});")
    out.append(f"const _: () = assert!(core::mem::align_of::<{s.name}>() == {s.align});")
    for f in s.fields:
        out.append(
            f"const _: () = assert!(core::mem::offset_of!({s.name}, {f.name}) == {f.offset});"
        )
    return out


def render_rust(model: Model) -> str:
    lines = [_RUST_PRELUDE.rstrip("\n")]
    for e in model.enums:
        lines += _rust_flags(e) if e.is_flag else _rust_enum(e)
    lines.append("")
    for c in model.constants:
        lines += _rust_constant(c)
    for s in model.structs:
        lines += _rust_struct(s)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ C


_C_PRELUDE = f"""\
/*
 * The copra ABI: syscall numbers, errors, flags, limits and shared structures.
 *
 * {GENERATED_LINE}
 *
 * Every name is COPRA_<DECLARATION>_<MEMBER> for enums and flag sets and
 * COPRA_<CONSTANT> for constants, spelled as in the spec.
 */
#ifndef COPRA_ABI_H
#define COPRA_ABI_H

#include <stddef.h>
#include <stdint.h>

/* A syscall number: class in bits 63:32, index in bits 31:0 (upstream's scheme). */
#define COPRA_SYSNO(cls, index) ((((uint64_t)(cls)) << 32) | (uint64_t)(uint32_t)(index))
"""


def _c_literal(value: int, hexadecimal: bool, signed: bool) -> str:
    if signed:
        return f"INT64_C({value})"
    return f"UINT64_C({_number(value, hexadecimal)})"


def _c_define(name: str, literal: str, doc: str) -> str:
    line = f"#define {name} {literal}"
    return f"{line} /* {_c_comment(doc)} */" if doc else line


def _c_enum(e: EnumDef) -> list[str]:
    prefix = "COPRA_" + _snake(e.name).upper()
    signed = e.repr_type == "i64"
    title = f"{e.name}: {_c_comment(e.doc.splitlines()[0])}" if e.doc else e.name
    out = ["", f"/* {title} */"]
    for m in e.members:
        literal = _c_literal(m.value, m.hexadecimal, signed)
        out.append(_c_define(f"{prefix}_{m.name}", literal, m.doc))
    return out


def _c_constant(c: Constant) -> str:
    if isinstance(c.value, tuple):
        doc = f"{c.doc} " if c.doc else ""
        return f"/* {c.name}: {_c_comment(doc)}{', '.join(c.value)} */"
    if isinstance(c.value, str):
        return _c_define(f"COPRA_{c.name}", f'"{c.value}"', c.doc)
    return _c_define(f"COPRA_{c.name}", _c_literal(c.value, c.hexadecimal, c.value < 0), c.doc)


def _c_struct(s: StructLayout) -> list[str]:
    tag = f"copra_{_snake(s.name)}"
    out = [""]
    if s.doc:
        out.append(f"/* {_c_comment(s.doc)} */")
    out.append(f"struct {tag} {{")
    for f in s.fields:
        ty = SCALARS[f.scalar][2]
        decl = f"{ty} {f.name}[{f.count}]" if f.count is not None else f"{ty} {f.name}"
        out.append(f"\t{decl};" + (f" /* {_c_comment(f.doc)} */" if f.doc else ""))
    out.append("};")
    out.append(f'_Static_assert(sizeof(struct {tag}) == {s.size}, "{tag}: size");')
    out.append(f'_Static_assert(_Alignof(struct {tag}) == {s.align}, "{tag}: alignment");')
    for f in s.fields:
        out.append(
            f"_Static_assert(offsetof(struct {tag}, {f.name}) == {f.offset}, "
            f'"{tag}.{f.name}: offset");'
        )
    return out


def render_c(model: Model) -> str:
    lines = [_C_PRELUDE.rstrip("\n")]
    for e in model.enums:
        lines += _c_enum(e)
    lines.append("")
    lines += [_c_constant(c) for c in model.constants]
    for s in model.structs:
        lines += _c_struct(s)
    lines += ["", "#endif /* COPRA_ABI_H */"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def outputs(model: Model | None = None) -> dict[Path, str]:
    """Each generated file's path (relative to the repository root) and text."""
    model = model if model is not None else collect()
    return {RUST_PATH: render_rust(model), C_PATH: render_c(model)}


def _default_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "user").is_dir():
            return parent
    return Path.cwd()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m copra.abi.gen", description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help="repository root")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if a file is stale"
    )
    args = parser.parse_args(argv)
    root: Path = args.root if args.root is not None else _default_root()
    stale = []
    for rel, text in outputs().items():
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")
    if args.check and stale:
        for rel in stale:
            print(f"stale: {rel} (run python -m copra.abi.gen)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
