"""Boot image configuration: which programs and files the RAM fs starts with.

The counterpart of upstream's ``fs.modules`` in ``configs/*.json``: a JSON document
names the user programs to pack and the path each gets in the RAM fs, plus extra
files given inline or read from the host. :func:`build_archive` turns it into the
PackIt archive the kernel populates the fs from. The format is in docs/images.md::

    {"version": 1,
     "fs": {"modules": {"init": {"path": "/init"}, "hello": {"path": "/bin/hello"}},
            "files": [{"path": "/etc/init.services", "text": "/bin/hello\\n"},
                      {"path": "/etc/blob", "source": "blob.bin"}]},
     "limits": {"frames": 8192, "mappings": 65536, "tasks": 64},
     "guests": [{"kernel": "hello.elf", "memory": 64, "cpus": 1, "cmdline": "quiet"}]}

A module name is a program name: the default resolver reads the packaged
``copra/images/<name>.elf`` (built by scripts/build-user-images; nothing here builds
it) and checks it with the ELF validator, so a broken program fails the build of the
image, not the boot. ``source`` paths are relative to the config file's directory.
``limits`` sets the resource limits of the boot (kernel/limits.py); they are not in
the archive but travel beside it (``BootConfig.limits``). ``guests`` lists the guest
VMs the boot creates (docs/vmm.md): a PVH kernel file (relative to the config's
directory), its RAM in MiB, its vCPUs and its command line; they too travel beside
the archive (the VMM layer makes them), not in it.

Invariants of :class:`ImageConfig`: every destination obeys the fs path rules; no
two entries share a destination (compared after dropping empty components); no
destination passes through another one. Unknown keys, wrong types and duplicate
JSON keys are errors, never ignored. The archive lists modules in config order, then
files in order, so the same config and programs always give the same bytes (and the
same launch measurement).

Locking: immutable values and pure functions; reading host files and packaged
programs is the only I/O. No locking.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from copra.kernel.elf import EHDR, PHDR, ElfError, parse_elf
from copra.kernel.errors import SyscallError
from copra.kernel.limits import DEFAULT_LIMITS, MAX_LIMIT, Limits
from copra.kernel.packit import PackItEntry, PackItError, check_paths, encode
from copra.kernel.paths import split_file_path

CONFIG_VERSION = 1
DEFAULT_CONFIG = "default.json"
IMAGES_PACKAGE = "copra"
IMAGES_DIR = "images"
INIT_PATH = "/init"
#: The vmm service's device-model programs, (path, packaged program): the vmm starts
#: each guest's COM1, block device and RTC models from these paths (docs/vmm.md).
VMM_MODELS = (("/bin/uart", "uart"), ("/bin/blk", "blk"), ("/bin/rtc", "rtc"))

_MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

ProgramResolver = Callable[[str], bytes]


class ImageError(Exception):
    """The image configuration or something it names is unusable; the message says why."""


@dataclass(frozen=True)
class ModuleSpec:
    """A user program ``name`` installed at ``path``."""

    name: str
    path: str


@dataclass(frozen=True)
class FileSpec:
    """An extra file at ``path``: inline bytes, or a host file read when building."""

    path: str
    content: bytes | Path

    def load(self) -> bytes:
        if isinstance(self.content, bytes):
            return self.content
        try:
            return self.content.read_bytes()
        except OSError as exc:
            raise ImageError(
                f"cannot read {self.content} for {self.path}: {exc.strerror or exc}"
            ) from None


def _components(path: str) -> tuple[str, ...]:
    try:
        return split_file_path(path)
    except SyscallError as exc:
        raise ImageError(f"invalid destination {path!r}: {exc.message}") from None


#: Bounds of a guest's configuration (the VMM layer checks the kernel itself).
GUEST_MEMORY_MIB = (2, 3072)
GUEST_CPUS = (1, 64)


@dataclass(frozen=True)
class GuestImage:
    """A guest VM the boot creates: ``kernel`` (a PVH ELF file), ``memory`` MiB of RAM."""

    kernel: Path
    memory: int = 64
    cpus: int = 1
    cmdline: str = ""
    name: str = ""  #: default: the kernel file's stem

    def __post_init__(self) -> None:
        lo, hi = GUEST_MEMORY_MIB
        if type(self.memory) is not int or not lo <= self.memory <= hi:
            raise ImageError(f"guest {self.kernel}: memory must be {lo} to {hi} MiB")
        lo, hi = GUEST_CPUS
        if type(self.cpus) is not int or not lo <= self.cpus <= hi:
            raise ImageError(f"guest {self.kernel}: cpus must be {lo} to {hi}")

    @property
    def label(self) -> str:
        return self.name or self.kernel.stem

    def load(self) -> bytes:
        try:
            return self.kernel.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read guest kernel {self.kernel}: "
                             f"{exc.strerror or exc}") from None


@dataclass(frozen=True)
class ImageConfig:
    """What goes into the boot archive (see the module docstring for its invariants)."""

    modules: tuple[ModuleSpec, ...] = ()
    files: tuple[FileSpec, ...] = ()
    limits: Limits = DEFAULT_LIMITS
    guests: tuple[GuestImage, ...] = ()

    def __post_init__(self) -> None:
        for module in self.modules:
            if not _MODULE_NAME.match(module.name):
                raise ImageError(f"invalid program name {module.name!r}")
        destinations = [m.path for m in self.modules] + [f.path for f in self.files]
        for path in destinations:
            _components(path)
        try:
            check_paths(destinations)
        except PackItError as exc:
            raise ImageError(f"conflicting destinations: {exc}") from None

    def with_file(self, path: str, content: bytes | Path) -> ImageConfig:
        """A copy with ``content`` at ``path``, replacing any module or file there."""
        target = _components(path)
        return replace(
            self,
            modules=tuple(m for m in self.modules if _components(m.path) != target),
            files=(
                *(f for f in self.files if _components(f.path) != target),
                FileSpec(path, content),
            ),
        )

    def with_files(self, extra: Iterable[tuple[str, bytes | Path]]) -> ImageConfig:
        config = self
        for path, content in extra:
            config = config.with_file(path, content)
        return config

    @classmethod
    def from_dict(cls, document: object, base_dir: Path) -> ImageConfig:
        """Build from a parsed JSON document; relative sources resolve against base_dir."""
        top = _object(document, "the configuration", {"version", "fs", "limits", "guests"})
        version = top.get("version", CONFIG_VERSION)
        if type(version) is not int or version != CONFIG_VERSION:
            raise ImageError(
                f"unsupported configuration version {version!r}, need {CONFIG_VERSION}"
            )
        fs = _object(top.get("fs", {}), "fs", {"modules", "files"})
        modules = []
        for name, spec in _object(fs.get("modules", {}), "fs.modules", None).items():
            entry = _object(spec, f"fs.modules.{name}", {"path"})
            modules.append(ModuleSpec(name, _string(entry, "path", f"fs.modules.{name}")))
        files = []
        raw_files = fs.get("files", [])
        if not isinstance(raw_files, list):
            raise ImageError("fs.files must be a list")
        for index, raw in enumerate(raw_files):
            where = f"fs.files[{index}]"
            entry = _object(raw, where, {"path", "text", "source"})
            path = _string(entry, "path", where)
            if ("text" in entry) == ("source" in entry):
                raise ImageError(f"{where} ({path}): give exactly one of 'text' and 'source'")
            if "text" in entry:
                content: bytes | Path = _string(entry, "text", where).encode("utf-8")
            else:
                content = base_dir / _string(entry, "source", where)
            files.append(FileSpec(path, content))
        return cls(tuple(modules), tuple(files), _limits(top.get("limits", {})),
                   _guests(top.get("guests", []), base_dir))

    @classmethod
    def from_json(cls, text: str, base_dir: Path) -> ImageConfig:
        try:
            document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise ImageError(f"not valid JSON: {exc}") from None
        return cls.from_dict(document, base_dir)

    @classmethod
    def load(cls, path: Path) -> ImageConfig:
        """Read a configuration file; its sources resolve against its directory."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ImageError(f"cannot read image configuration {path}: {exc}") from None
        try:
            return cls.from_json(text, path.parent)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ImageError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _object(value: object, where: str, allowed: set[str] | None) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ImageError(f"{where} must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ImageError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    return value


def _string(entry: dict[str, object], key: str, where: str) -> str:
    if key not in entry:
        raise ImageError(f"{where}: missing {key!r}")
    value = entry[key]
    if not isinstance(value, str):
        raise ImageError(f"{where}.{key} must be a string")
    return value


def _limits(value: object) -> Limits:
    """The ``limits`` object: each key optional, each value an integer in [1, MAX_LIMIT]."""
    entry = _object(value, "limits", set(Limits.names()))
    for key, number in entry.items():
        if type(number) is not int or not 1 <= number <= MAX_LIMIT:
            raise ImageError(f"limits.{key} must be an integer from 1 to {MAX_LIMIT}, "
                             f"not {json.dumps(number)}")
    return Limits(**entry)  # type: ignore[arg-type]


def _guests(value: object, base_dir: Path) -> tuple[GuestImage, ...]:
    """The ``guests`` list: each {"kernel": path, "memory": MiB, "cpus": n, "cmdline": s,
    "name": s}, only ``kernel`` required."""
    if not isinstance(value, list):
        raise ImageError("guests must be a list")
    out = []
    for index, raw in enumerate(value):
        where = f"guests[{index}]"
        entry = _object(raw, where, {"kernel", "memory", "cpus", "cmdline", "name"})
        kernel = base_dir / _string(entry, "kernel", where)
        memory, cpus = entry.get("memory", 64), entry.get("cpus", 1)
        if type(memory) is not int or type(cpus) is not int:
            raise ImageError(f"{where}: memory and cpus must be integers")
        cmdline = _string(entry, "cmdline", where) if "cmdline" in entry else ""
        name = _string(entry, "name", where) if "name" in entry else ""
        out.append(GuestImage(kernel, memory, cpus, cmdline, name))
    return tuple(out)


def _images() -> Path:
    return Path(str(resources.files(IMAGES_PACKAGE) / IMAGES_DIR))


def default_config() -> ImageConfig:
    """The shipped configuration, ``copra/images/default.json``."""
    return ImageConfig.load(_images() / DEFAULT_CONFIG)


#: The shipped configuration `copra run --demo` boots: the vmm service as /init, its
#: device models, and the prebuilt `demo` guest kernel (images/guests/demo.elf).
DEMO_CONFIG = "demo.json"


def demo_config_path() -> Path:
    """The path of the shipped demo configuration, ``copra/images/demo.json``."""
    return _images() / DEMO_CONFIG


def packaged_program(name: str) -> bytes:
    """The packaged ``copra/images/<name>.elf``; ImageError if it was not built."""
    if not _MODULE_NAME.match(name):
        raise ImageError(f"invalid program name {name!r}")
    path = _images() / f"{name}.elf"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(
            f"program {name!r} is not built: {IMAGES_PACKAGE}/{IMAGES_DIR}/{name}.elf is missing "
            "(build the user programs with scripts/build-user-images)"
        ) from None
    except OSError as exc:
        raise ImageError(f"cannot read program {name!r} from {path}: {exc}") from None


def check_program(what: str, data: bytes) -> None:
    """ImageError unless ``data`` is a loadable copra program."""
    try:
        parse_elf(data)
    except ElfError as exc:
        raise ImageError(f"{what} is not a loadable program: {exc}") from None


#: Program header types that C libraries and language runtimes (glibc, musl, Go, Rust's
#: std) put in a static executable and copra's link script (user/link.ld) never does
#: (PT_TLS is not one: copra programs have it too, and the loader honours it).
_FOREIGN_SEGMENTS = {
    4: "PT_NOTE", 0x6474E550: "PT_GNU_EH_FRAME", 0x6474E551: "PT_GNU_STACK",
    0x6474E552: "PT_GNU_RELRO", 0x6474E553: "PT_GNU_PROPERTY",
}


def foreign_program_hint(what: str, data: bytes) -> str | None:
    """A hint when ``data``, a loadable program, looks built for Linux rather than
    against copra's user library (segments only a libc or language runtime emits);
    None otherwise. The program is loaded either way: this only explains its fate."""
    try:
        header = EHDR.unpack_from(data)
        phoff, phentsize, phnum = header[5], header[9], header[10]
        found = []
        for index in range(phnum):
            p_type = PHDR.unpack_from(data, phoff + index * phentsize)[0]
            name = _FOREIGN_SEGMENTS.get(p_type)
            if name is not None and name not in found:
                found.append(name)
    except struct.error:
        return None
    if not found:
        return None
    return (f"{what} has {', '.join(found)} segments, which copra programs do not have: it "
            "looks built against a C library or a language runtime (glibc, musl, Go, Rust's "
            "std). Such a program expects Linux (its initial stack, its system calls), which "
            "copra does not provide, and is killed by its first fault. copra programs are "
            "built against the user library in user/ (docs/user-library.md).")


def archive_entries(
    config: ImageConfig, resolve_program: ProgramResolver = packaged_program
) -> list[PackItEntry]:
    """The archive's entries: modules (ELF-checked) in order, then files in order."""
    entries = []
    for module in config.modules:
        data = resolve_program(module.name)
        check_program(f"program {module.name!r} (for {module.path})", data)
        entries.append(PackItEntry(module.path, data))
    entries.extend(PackItEntry(f.path, f.load()) for f in config.files)
    return entries


def build_archive(
    config: ImageConfig, resolve_program: ProgramResolver = packaged_program
) -> bytes:
    """The PackIt archive for ``config``; ``resolve_program`` maps a module name to its ELF."""
    try:
        return encode(archive_entries(config, resolve_program))
    except PackItError as exc:  # unreachable: ImageConfig enforces the same rules
        raise ImageError(str(exc)) from None


def parse_file_option(option: str) -> tuple[Path, str]:
    """``SRC=DEST`` (``copra run --file``) as (host path, fs path); split at the last '='."""
    source, sep, dest = option.rpartition("=")
    if not sep or not source or not dest:
        raise ImageError(f"--file {option!r}: expected SRC=DEST")
    _components(dest)
    return Path(source), dest


def boot_image_config(
    config_path: Path | None, init: Path | None, files: Sequence[str]
) -> ImageConfig:
    """The configuration ``copra run`` boots: a config (default if None), then overrides.

    ``init`` replaces whatever is at /init (and must be a loadable program); each
    ``SRC=DEST`` in ``files`` then adds or replaces one file. The limits are the
    config's.
    """
    config = ImageConfig.load(config_path) if config_path is not None else default_config()
    if init is not None:
        try:
            data = init.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read --init {init}: {exc.strerror or exc}") from None
        check_program(f"--init {init}", data)
        config = config.with_file(INIT_PATH, data)
    return config.with_files((dest, source) for source, dest in map(parse_file_option, files))


def with_vmm_service(config: ImageConfig) -> ImageConfig:
    """``config`` with the packaged vmm service as /init and its device models
    (:data:`VMM_MODELS`) where it starts them from."""
    config = config.with_file(INIT_PATH, packaged_program("vmm"))
    return config.with_files((path, packaged_program(name)) for path, name in VMM_MODELS)


def build_boot_archive(
    config_path: Path | None, init: Path | None, files: Sequence[str]
) -> bytes:
    """The archive of :func:`boot_image_config`'s configuration."""
    return build_archive(boot_image_config(config_path, init, files))
