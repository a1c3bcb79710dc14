"""Boot image configuration: parsing, overrides and the archive it builds."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from copra.kernel.image import (
    FileSpec,
    ImageConfig,
    ImageError,
    ModuleSpec,
    archive_entries,
    boot_image_config,
    build_archive,
    build_boot_archive,
    default_config,
    foreign_program_hint,
    packaged_program,
    parse_file_option,
)
from copra.kernel.limits import Limits
from copra.kernel.packit import PackItEntry, decode
from copra.kernel.ramfs import RamFs

HERE = Path(".")


def tiny_elf(marker: bytes = b"") -> bytes:
    """A minimal loadable ELF: one R+X PT_LOAD at 0x400000 + 0x78 holding ``marker``."""
    body = b"\xcc" * 8 + marker
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, 0x400078, 64, 0, 0, 64, 56, 1,
                         64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0x78, 0x400078, 0x400078, len(body), len(body), 4096)
    return header + phdr + body


def fake_programs(name: str) -> bytes:
    return tiny_elf(name.encode())


def config_from(document: object, base_dir: Path = HERE) -> ImageConfig:
    return ImageConfig.from_json(json.dumps(document), base_dir)


def image_error(document: object) -> str:
    with pytest.raises(ImageError) as info:
        config_from(document)
    return str(info.value)


# -- the shipped default -------------------------------------------------------------------


def test_default_config_installs_init_and_hello() -> None:
    config = default_config()
    assert config.modules == (ModuleSpec("init", "/init"), ModuleSpec("hello", "/bin/hello"))


def test_default_config_lists_hello_in_init_services() -> None:
    (services,) = default_config().files
    assert services.path == "/etc/init.services"
    assert isinstance(services.content, bytes)
    lines = [line for line in services.content.decode().splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("#")] == ["/bin/hello"]


def test_default_config_builds_a_populatable_archive() -> None:
    fs = RamFs()
    assert fs.populate(build_archive(default_config(), fake_programs)) == 3
    assert fs.open("/bin/hello").read(0, 4) == b"\x7fELF"
    assert [entry.name for entry in fs.opendir("/")] == ["init", "bin", "etc"]


def test_default_config_builds_with_packaged_programs() -> None:
    entries = decode(build_archive(default_config()))
    assert [e.path for e in entries] == ["/init", "/bin/hello", "/etc/init.services"]


# -- archive building -----------------------------------------------------------------------


def test_archive_lists_modules_then_files_in_config_order() -> None:
    config = config_from(
        {
            "fs": {
                "modules": {"b": {"path": "/b"}, "a": {"path": "/a"}},
                "files": [{"path": "/z", "text": "zz"}, {"path": "/y", "text": "é"}],
            }
        }
    )
    assert decode(build_archive(config, fake_programs)) == [
        PackItEntry("/b", tiny_elf(b"b")),
        PackItEntry("/a", tiny_elf(b"a")),
        PackItEntry("/z", b"zz"),
        PackItEntry("/y", "é".encode()),
    ]


def test_archive_is_deterministic() -> None:
    config = default_config()
    assert build_archive(config, fake_programs) == build_archive(config, fake_programs)


def test_module_that_is_not_an_elf_raises_imageerror() -> None:
    config = config_from({"fs": {"modules": {"init": {"path": "/init"}}}})
    with pytest.raises(ImageError, match=r"program 'init' .* not a loadable program: bad magic"):
        build_archive(config, lambda name: b"#!/bin/sh\n")


def test_source_file_is_read_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    config_file = tmp_path / "image.json"
    config_file.write_text(json.dumps({"fs": {"files": [{"path": "/d", "source": "data.bin"}]}}))
    config = ImageConfig.load(config_file)
    assert archive_entries(config, fake_programs) == [PackItEntry("/d", b"\x00\x01")]


def test_missing_source_file_raises_imageerror_at_build(tmp_path: Path) -> None:
    config = config_from({"fs": {"files": [{"path": "/d", "source": "gone"}]}}, tmp_path)
    with pytest.raises(ImageError, match=r"cannot read .*gone for /d"):
        build_archive(config, fake_programs)


def test_packaged_program_missing_names_the_build_script() -> None:
    with pytest.raises(ImageError, match=r"not built: .*build-user-images"):
        packaged_program("no-such-program")


def test_packaged_program_rejects_path_like_names() -> None:
    with pytest.raises(ImageError, match=r"invalid program name"):
        packaged_program("../default")


# -- configuration errors --------------------------------------------------------------------


def test_empty_document_is_an_empty_image() -> None:
    assert config_from({}) == ImageConfig()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a JSON object"),
        ({"version": 2}, "unsupported configuration version 2"),
        ({"version": True}, "unsupported configuration version"),
        ({"igvm": {}}, "unknown key"),
        ({"fs": {"module": {}}}, "fs: unknown key"),
        ({"fs": {"modules": []}}, "fs.modules must be a JSON object"),
        ({"fs": {"modules": {"init": {}}}}, "missing 'path'"),
        ({"fs": {"modules": {"init": {"path": 1}}}}, "path must be a string"),
        ({"fs": {"modules": {"init": {"path": "/i", "type": "user"}}}}, "unknown key"),
        ({"fs": {"modules": {"a/b": {"path": "/x"}}}}, "invalid program name"),
        ({"fs": {"modules": {"": {"path": "/x"}}}}, "invalid program name"),
        ({"fs": {"files": {}}}, "fs.files must be a list"),
        ({"fs": {"files": [{"path": "/x"}]}}, "exactly one of 'text' and 'source'"),
        ({"fs": {"files": [{"path": "/x", "text": "", "source": "y"}]}}, "exactly one"),
        ({"fs": {"files": [{"path": "/x", "text": 3}]}}, "text must be a string"),
        ({"fs": {"files": [{"text": "t"}]}}, "missing 'path'"),
        ({"fs": {"files": [{"path": "/", "text": ""}]}}, "invalid destination '/'"),
        ({"fs": {"files": [{"path": "/" + "x" * 256, "text": ""}]}}, "invalid destination"),
        (
            {"fs": {"modules": {"a": {"path": "/a"}}, "files": [{"path": "a/", "text": ""}]}},
            "duplicate path",
        ),
        (
            {"fs": {"modules": {"a": {"path": "/bin"}}, "files": [{"path": "/bin/x", "text": ""}]}},
            "passes through the file '/bin'",
        ),
    ],
)
def test_malformed_config_raises_imageerror(document: object, message: str) -> None:
    assert message in image_error(document)


def test_duplicate_json_key_raises_imageerror() -> None:
    text = '{"fs": {"modules": {"a": {"path": "/a"}, "a": {"path": "/b"}}}}'
    with pytest.raises(ImageError, match=r"duplicate key 'a'"):
        ImageConfig.from_json(text, HERE)


def test_invalid_json_raises_imageerror() -> None:
    with pytest.raises(ImageError, match=r"not valid JSON"):
        ImageConfig.from_json("{", HERE)


def test_load_error_names_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"version": 9}')
    with pytest.raises(ImageError, match=r"bad.json: unsupported configuration version 9"):
        ImageConfig.load(path)


def test_load_missing_config_raises_imageerror(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"cannot read image configuration"):
        ImageConfig.load(tmp_path / "none.json")


# -- extra files and overrides ---------------------------------------------------------------


def test_with_file_adds_a_file_at_the_end() -> None:
    config = default_config().with_file("/etc/extra", b"x")
    assert config.files[-1] == FileSpec("/etc/extra", b"x")
    assert len(config.files) == 2


def test_with_file_replaces_a_file_at_the_same_destination() -> None:
    config = default_config().with_file("etc//init.services", b"/bin/other\n")
    assert [f.content for f in config.files] == [b"/bin/other\n"]


def test_with_file_replaces_a_module_at_the_same_destination() -> None:
    config = default_config().with_file("/bin/hello", b"replacement")
    assert [m.name for m in config.modules] == ["init"]
    assert config.files[-1] == FileSpec("/bin/hello", b"replacement")


def test_with_file_conflicting_destination_raises_imageerror() -> None:
    with pytest.raises(ImageError, match=r"passes through the file '/init'"):
        default_config().with_file("/init/x", b"")


def test_parse_file_option_splits_at_last_equals() -> None:
    assert parse_file_option("a=b.txt=/etc/b") == (Path("a=b.txt"), "/etc/b")


@pytest.mark.parametrize("option", ["nodest", "=/x", "src=", "src=/"])
def test_parse_file_option_malformed_raises_imageerror(option: str) -> None:
    with pytest.raises(ImageError):
        parse_file_option(option)


def test_build_boot_archive_applies_init_and_files(tmp_path: Path) -> None:
    config_file = tmp_path / "image.json"
    config_file.write_text(json.dumps({"fs": {"files": [{"path": "/etc/a", "text": "old"}]}}))
    init = tmp_path / "init.elf"
    init.write_bytes(tiny_elf(b"mine"))
    (tmp_path / "a.txt").write_text("new")
    options = [f"{tmp_path / 'a.txt'}=/etc/a", f"{tmp_path / 'a.txt'}=/etc/b"]
    entries = decode(build_boot_archive(config_file, init, options))
    assert entries == [
        PackItEntry("/init", tiny_elf(b"mine")),
        PackItEntry("/etc/a", b"new"),
        PackItEntry("/etc/b", b"new"),
    ]


def test_build_boot_archive_rejects_non_elf_init(tmp_path: Path) -> None:
    config_file = tmp_path / "image.json"
    config_file.write_text("{}")
    init = tmp_path / "init"
    init.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(ImageError, match=r"--init .* not a loadable program: not ELF64"):
        build_boot_archive(config_file, init, [])


# -- limits --------------------------------------------------------------------------------


def test_limits_default_when_the_config_has_none() -> None:
    assert config_from({"version": 1}).limits == Limits()
    assert default_config().limits == Limits()


def test_limits_object_sets_each_given_limit_and_keeps_the_rest() -> None:
    config = config_from({"limits": {"frames": 512, "mappings": 65536, "tasks": 8}})
    assert config.limits == Limits(frames=512, mappings=65536, tasks=8)
    assert config.limits.handles == Limits().handles


def test_limits_survive_overrides(tmp_path: Path) -> None:
    config_file = tmp_path / "image.json"
    config_file.write_text(json.dumps({"limits": {"children": 3}}))
    (tmp_path / "extra").write_bytes(b"x")
    config = boot_image_config(config_file, None, [f"{tmp_path / 'extra'}=/etc/extra"])
    assert config.limits.children == 3


@pytest.mark.parametrize("value", [0, -1, 1 << 32, True, 1.0, "7", None, [1]])
def test_limit_that_is_not_an_integer_in_range_is_an_error(value: object) -> None:
    message = image_error({"limits": {"handles": value}})
    assert message.startswith("limits.handles must be an integer from 1 to 4294967295")


def test_unknown_limit_is_an_error() -> None:
    assert "limits: unknown key(s) 'files'" in image_error({"limits": {"files": 5}})


def test_limits_that_is_not_an_object_is_an_error() -> None:
    assert image_error({"limits": [1]}) == "limits must be a JSON object"


def test_duplicate_limit_key_is_an_error() -> None:
    with pytest.raises(ImageError, match="duplicate key 'tasks'"):
        ImageConfig.from_json('{"limits": {"tasks": 1, "tasks": 2}}', HERE)
# --- a program built for Linux, not against copra's user library -------------------------


def _linux_like_program() -> bytes:
    """The shape glibc's static executables have: a PT_LOAD, then notes, TLS, a stack."""
    from test_elf import TEXT, Seg, build_elf

    return build_elf([Seg(TEXT), Seg(0, b"GNU\0", 4, ptype=4), Seg(0, b"", 4, ptype=7),
                      Seg(0, b"", 6, ptype=0x6474E551)])


def test_foreign_program_hint_names_the_linux_only_segments() -> None:
    hint = foreign_program_hint("--init prog", _linux_like_program())
    assert hint is not None
    assert hint.startswith("--init prog has PT_NOTE, PT_GNU_STACK segments, which copra "
                           "programs do not have")
    assert "docs/user-library.md" in hint


@pytest.mark.parametrize("name", sorted(json.loads(
    (Path(__file__).resolve().parents[2] / "src" / "copra" / "images" / "manifest.json")
    .read_text())["images"]))
def test_foreign_program_hint_is_none_for_every_shipped_program(name: str) -> None:
    assert foreign_program_hint(name, packaged_program(name)) is None


def test_cli_measure_of_a_linux_program_notes_it_on_stderr_only(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from copra.cli import main

    program = tmp_path / "glibc-hello"
    program.write_bytes(_linux_like_program())
    result = CliRunner().invoke(main, ["measure", "--init", str(program)])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip()) == 96
    assert result.stderr.startswith(f"copra: note: --init {program} has PT_NOTE")


# -- guests --------------------------------------------------------------------------------


def test_guests_default_to_none() -> None:
    assert config_from({"version": 1}).guests == ()


def test_guest_entry_resolves_its_kernel_against_the_config_dir(tmp_path: Path) -> None:
    config = config_from({"guests": [{"kernel": "k.elf", "memory": 8, "cpus": 2,
                                      "cmdline": "quiet", "name": "g"}]}, tmp_path)
    (guest,) = config.guests
    assert (guest.kernel, guest.memory, guest.cpus, guest.cmdline, guest.label) == (
        tmp_path / "k.elf", 8, 2, "quiet", "g")
    assert config_from({"guests": [{"kernel": "a/k.elf"}]}).guests[0].label == "k"


@pytest.mark.parametrize("entry, words", [
    ({"memory": 8}, "missing 'kernel'"),
    ({"kernel": "k.elf", "memory": 1}, "memory must be 2 to 3072"),
    ({"kernel": "k.elf", "cpus": 0}, "cpus must be 1 to 64"),
    ({"kernel": "k.elf", "memory": "8"}, "must be integers"),
    ({"kernel": "k.elf", "ram": 8}, "unknown key"),
])
def test_bad_guest_entries_raise_imageerror_saying_why(entry: dict[str, object],
                                                        words: str) -> None:
    assert words in image_error({"guests": [entry]})


def test_guest_kernel_that_cannot_be_read_raises_imageerror(tmp_path: Path) -> None:
    (guest,) = config_from({"guests": [{"kernel": "missing.elf"}]}, tmp_path).guests
    with pytest.raises(ImageError, match="cannot read guest kernel"):
        guest.load()
