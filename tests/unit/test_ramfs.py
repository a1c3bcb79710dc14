"""RAM fs: tree operations, upstream ordering, error codes, pages and populate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import NAME_MAX, PAGE_SIZE, PATH_MAX, Errno
from copra.kernel.errors import SyscallError
from copra.kernel.packit import PackItEntry, PackItError, encode
from copra.kernel.ramfs import Directory, File, RamFs


def errno_of(call: object) -> Errno:
    assert callable(call)
    with pytest.raises(SyscallError) as info:
        call()
    return info.value.errno


def names(fs: RamFs, path: str = "/") -> list[str]:
    return [entry.name for entry in fs.opendir(path)]


# -- paths ---------------------------------------------------------------------


def test_lookup_ignores_empty_components() -> None:
    fs = RamFs()
    fs.mkdir("/a")
    file = fs.create("a/b")
    assert fs.lookup("//a///b/") is file


def test_lookup_root_path_returns_root() -> None:
    fs = RamFs()
    assert fs.lookup("/") is fs.root
    assert fs.lookup("") is fs.root


def test_dot_and_dotdot_are_ordinary_names() -> None:
    fs = RamFs()
    fs.mkdir("/..")
    fs.create("/../.")
    assert names(fs) == [".."]
    assert names(fs, "..") == ["."]


def test_path_of_path_max_minus_one_bytes_is_accepted() -> None:
    fs = RamFs()
    component = "d" * NAME_MAX
    path = "/" * (PATH_MAX - 1 - len(component)) + component
    assert len(path) == PATH_MAX - 1
    fs.create(path)
    assert names(fs) == [component]


def test_path_of_path_max_bytes_returns_enametoolong() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.create("/" * (PATH_MAX - 1) + "x")) == Errno.ENAMETOOLONG


def test_path_length_counts_utf8_bytes() -> None:
    fs = RamFs()
    path = "/".join(["é" * 100] * 21)  # 2120 characters, 4220 bytes
    assert len(path) < PATH_MAX and len(path.encode()) > PATH_MAX - 1
    assert errno_of(lambda: fs.lookup(path)) == Errno.ENAMETOOLONG


def test_component_longer_than_name_max_returns_enametoolong() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.create("x" * (NAME_MAX + 1))) == Errno.ENAMETOOLONG


def test_component_of_name_max_utf8_bytes_is_accepted() -> None:
    fs = RamFs()
    name = "é" * (NAME_MAX // 2) + "x"
    assert len(name.encode()) == NAME_MAX
    fs.create(name)


def test_path_with_lone_surrogate_returns_einval() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.create("/a\udcff")) == Errno.EINVAL


def test_path_with_nul_returns_einval() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.create("/a\0b")) == Errno.EINVAL


@pytest.mark.parametrize("path", ["", "/", "///"])
def test_file_operation_on_empty_path_returns_einval(path: str) -> None:
    fs = RamFs()
    for op in (fs.create, fs.open, fs.mkdir, fs.rmdir, fs.unlink):
        assert errno_of(lambda op=op: op(path)) == Errno.EINVAL


# -- create / open / lookup -----------------------------------------------------


def test_create_existing_file_returns_eexist() -> None:
    fs = RamFs()
    fs.create("/f")
    assert errno_of(lambda: fs.create("/f")) == Errno.EEXIST


def test_create_over_directory_returns_eexist() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    assert errno_of(lambda: fs.create("/d")) == Errno.EEXIST


def test_create_in_missing_directory_returns_enotfound() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.create("/no/f")) == Errno.ENOTFOUND


def test_create_through_file_returns_enotdir() -> None:
    fs = RamFs()
    fs.create("/f")
    assert errno_of(lambda: fs.create("/f/g")) == Errno.ENOTDIR


def test_open_missing_file_returns_enotfound() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.open("/missing")) == Errno.ENOTFOUND


def test_open_directory_returns_eisdir() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    assert errno_of(lambda: fs.open("/d")) == Errno.EISDIR


def test_open_through_file_returns_enotdir() -> None:
    fs = RamFs()
    fs.create("/f")
    assert errno_of(lambda: fs.open("/f/x")) == Errno.ENOTDIR


def test_open_returns_the_created_file() -> None:
    fs = RamFs()
    file = fs.create("/f")
    assert fs.open("f") is file


def test_open_or_create_missing_file_creates_it() -> None:
    fs = RamFs()
    file, created = fs.open_or_create("/f")
    assert created and fs.open("/f") is file


def test_open_or_create_existing_file_opens_it() -> None:
    fs = RamFs()
    file = fs.create("/f")
    assert fs.open_or_create("/f") == (file, False)


def test_open_or_create_directory_returns_eisdir() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    assert errno_of(lambda: fs.open_or_create("/d")) == Errno.EISDIR


def test_lookup_dir_of_file_returns_enotdir() -> None:
    fs = RamFs()
    fs.create("/f")
    assert errno_of(lambda: fs.lookup_dir("/f")) == Errno.ENOTDIR


def test_operations_resolve_relative_to_given_root() -> None:
    fs = RamFs()
    fs.mkdir("/jail")
    jail = fs.lookup_dir("/jail")
    fs.create("/outside")
    inner = fs.create("/inner", root=jail)
    assert fs.open("/jail/inner") is inner
    assert fs.open("inner", root=jail) is inner
    assert errno_of(lambda: fs.open("/outside", root=jail)) == Errno.ENOTFOUND
    assert errno_of(lambda: fs.open("../outside", root=jail)) == Errno.ENOTFOUND


def test_root_from_another_fs_is_rejected() -> None:
    fs, other = RamFs(), RamFs()
    with pytest.raises(ValueError, match="another RamFs"):
        fs.lookup("/", root=other.root)


# -- mkdir / rmdir / unlink -----------------------------------------------------


def test_mkdir_existing_name_returns_eexist() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    fs.create("/f")
    assert errno_of(lambda: fs.mkdir("/d")) == Errno.EEXIST
    assert errno_of(lambda: fs.mkdir("/f")) == Errno.EEXIST


def test_mkdir_missing_parent_returns_enotfound() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.mkdir("/a/b")) == Errno.ENOTFOUND


def test_rmdir_non_empty_returns_enotempty() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    fs.create("/d/f")
    assert errno_of(lambda: fs.rmdir("/d")) == Errno.ENOTEMPTY
    assert names(fs) == ["d"]


def test_rmdir_file_returns_enotdir() -> None:
    fs = RamFs()
    fs.create("/f")
    assert errno_of(lambda: fs.rmdir("/f")) == Errno.ENOTDIR


def test_rmdir_missing_returns_enotfound() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.rmdir("/d")) == Errno.ENOTFOUND


def test_rmdir_empty_directory_removes_it() -> None:
    fs = RamFs()
    directory = fs.mkdir("/d")
    fs.rmdir("/d/")
    assert names(fs) == [] and directory.removed


def test_create_in_removed_directory_returns_enotfound() -> None:
    fs = RamFs()
    directory = fs.mkdir("/d")
    fs.rmdir("/d")
    assert errno_of(lambda: fs.create("f", root=directory)) == Errno.ENOTFOUND
    assert errno_of(lambda: fs.mkdir("e", root=directory)) == Errno.ENOTFOUND
    assert len(directory) == 0


def test_unlink_directory_returns_eisdir() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    assert errno_of(lambda: fs.unlink("/d")) == Errno.EISDIR


def test_unlink_missing_returns_enotfound() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.unlink("/f")) == Errno.ENOTFOUND


def test_unlinked_file_stays_usable_through_its_node() -> None:
    fs = RamFs()
    file = fs.create("/f")
    file.write(0, b"kept")
    fs.unlink("/f")
    assert errno_of(lambda: fs.open("/f")) == Errno.ENOTFOUND
    assert file.read(0, 10) == b"kept"


# -- directory order ------------------------------------------------------------


def test_directory_lists_entries_in_insertion_order() -> None:
    fs = RamFs()
    for name in ("c", "a", "b"):
        fs.create(name)
    assert names(fs) == ["c", "a", "b"]


def test_unlink_swap_removes_the_entry() -> None:
    fs = RamFs()
    for name in ("a", "b", "c", "d"):
        fs.create(name)
    fs.unlink("b")
    assert names(fs) == ["a", "d", "c"]
    fs.unlink("c")
    assert names(fs) == ["a", "d"]
    fs.create("e")
    assert names(fs) == ["a", "d", "e"]
    assert fs.lookup("d") is not None and fs.lookup("e") is not None


def test_opendir_is_a_snapshot() -> None:
    fs = RamFs()
    fs.create("a")
    snapshot = fs.opendir("/")
    fs.create("b")
    fs.unlink("a")
    assert [entry.name for entry in snapshot] == ["a"]


def test_opendir_of_file_returns_enotdir() -> None:
    fs = RamFs()
    fs.create("/f")
    assert errno_of(lambda: fs.opendir("/f")) == Errno.ENOTDIR


def test_opendir_missing_returns_enotfound() -> None:
    fs = RamFs()
    assert errno_of(lambda: fs.opendir("/d")) == Errno.ENOTFOUND


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=40))
def test_directory_order_matches_a_swap_remove_model(ops: list[tuple[bool, int]]) -> None:
    fs = RamFs()
    model: list[str] = []
    for create, number in ops:
        name = f"n{number}"
        if create and name not in model:
            fs.create(name)
            model.append(name)
        elif not create and name in model:
            fs.unlink(name)
            index = model.index(name)
            model[index] = model[-1]
            model.pop()
    assert names(fs) == model
    for name in model:
        assert isinstance(fs.lookup(name), File)


# -- file contents ----------------------------------------------------------------


def test_read_at_or_past_eof_returns_nothing() -> None:
    fs = RamFs()
    file = fs.create("/f")
    file.write(0, b"abc")
    assert file.read(3, 10) == b""
    assert file.read(100, 10) == b""


def test_page_of_foreign_file_is_rejected() -> None:
    fs, other = RamFs(), RamFs()
    file = other.create("/f")
    with pytest.raises(ValueError, match="another RamFs"):
        fs.page(file, 0)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("w"), st.integers(0, 3 * PAGE_SIZE), st.binary(max_size=PAGE_SIZE + 9)
            ),
            st.tuples(st.just("t"), st.integers(0, 3 * PAGE_SIZE), st.just(b"")),
        ),
        max_size=12,
    )
)
def test_file_contents_match_a_bytearray_model(ops: list[tuple[str, int, bytes]]) -> None:
    fs = RamFs()
    file = fs.create("/f")
    model = bytearray()
    for op, offset, data in ops:
        if op == "w":
            if data and offset > len(model):
                model += bytes(offset - len(model))
            model[offset : offset + len(data)] = data
            file.write(offset, data)
        elif offset <= len(model):
            del model[offset:]
            file.truncate(offset)
    assert file.size == len(model)
    assert file.read(0, len(model) + 1) == bytes(model)
    assert file.page_count == -(-len(model) // PAGE_SIZE)
    assert fs.pages_in_use == file.page_count
    for index in range(file.page_count):
        page = bytes(fs.page(file, index))
        expected = bytes(model[index * PAGE_SIZE : (index + 1) * PAGE_SIZE])
        assert page == expected + bytes(PAGE_SIZE - len(expected))  # zeros past EOF


# -- page accounting ----------------------------------------------------------------


def test_pages_in_use_counts_written_pages() -> None:
    fs = RamFs()
    fs.create("/a").write(0, b"x" * (PAGE_SIZE + 1))
    fs.create("/b").write(0, b"y")
    fs.create("/empty")
    assert fs.pages_in_use == 3


def test_truncate_returns_pages() -> None:
    fs = RamFs()
    file = fs.create("/a")
    file.write(0, bytes(3 * PAGE_SIZE))
    file.truncate(PAGE_SIZE)
    assert fs.pages_in_use == 1


# -- populate -------------------------------------------------------------------------


def test_populate_creates_missing_directories_and_files() -> None:
    fs = RamFs()
    archive = encode([PackItEntry("/init", b"I"), PackItEntry("/bin/hello", b"H" * 5000)])
    assert fs.populate(archive) == 2
    assert names(fs) == ["init", "bin"]
    assert fs.open("/bin/hello").read(0, 9999) == b"H" * 5000
    assert fs.pages_in_use == 3


def test_populate_into_existing_directory_keeps_it() -> None:
    fs = RamFs()
    directory = fs.mkdir("/bin")
    fs.populate(encode([PackItEntry("/bin/a", b"")]))
    assert fs.lookup("/bin") is directory and names(fs, "/bin") == ["a"]


def test_populate_existing_file_returns_eexist_and_changes_nothing() -> None:
    fs = RamFs()
    fs.create("/b")
    archive = encode([PackItEntry("/a/x", b"1"), PackItEntry("/b", b"2")])
    assert errno_of(lambda: fs.populate(archive)) == Errno.EEXIST
    assert names(fs) == ["b"] and fs.pages_in_use == 0


def test_populate_through_existing_file_returns_enotdir() -> None:
    fs = RamFs()
    fs.create("/bin")
    assert errno_of(lambda: fs.populate(encode([PackItEntry("/bin/a", b"")]))) == Errno.ENOTDIR


def test_populate_malformed_archive_raises_packiterror() -> None:
    fs = RamFs()
    with pytest.raises(PackItError):
        fs.populate(b"PKIT\x08\0\0\0\x02")


def test_populate_under_task_root() -> None:
    fs = RamFs()
    root = fs.mkdir("/svc")
    fs.populate(encode([PackItEntry("/etc/conf", b"c")]), root=root)
    assert fs.open("/svc/etc/conf").read(0, 1) == b"c"


def test_node_types_report_their_file_type() -> None:
    fs = RamFs()
    assert isinstance(fs.mkdir("/d"), Directory)
    assert fs.lookup("/d").file_type.name == "DIRECTORY"
    assert fs.create("/f").file_type.name == "FILE"
