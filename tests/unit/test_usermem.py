"""The user copy path over a plain bytearray: page runs, EFAULT rules, strings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import PAGE_SIZE, PATH_MAX, USER_END, Errno
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameAllocator, FrameOwner, PhysicalMemory
from copra.kernel.pagetable import AddressSpace
from copra.kernel.usermem import UserPtr, copy_in, copy_in_str, copy_out

# SDM 3A 4.5 entry bits, spelled out so the kernel half below is built by hand.
P, RW, US, XD = 1 << 0, 1 << 1, 1 << 2, 1 << 63
KERNEL_VA = 0xFFFF_8000_0000_0000 + 5 * PAGE_SIZE  # PML4 256, PDPT 0, PD 0, PT 5
VA = 0x40_0000
LAST_PAGE = USER_END - PAGE_SIZE


class Space:
    """An address space whose kernel half maps KERNEL_VA with a (hostile) U leaf."""

    def __init__(self, pages: int = 64) -> None:
        self.backing = bytearray(pages * PAGE_SIZE)
        self.memory = PhysicalMemory(memoryview(self.backing))
        self.frames = FrameAllocator(self.memory, PAGE_SIZE)
        pdpt, pd, pt, page = (self.frames.alloc(FrameOwner.KERNEL) for _ in range(4))
        self.memory.write(pdpt, (pd | P | RW).to_bytes(8, "little"))
        self.memory.write(pd, (pt | P | RW).to_bytes(8, "little"))
        self.memory.write(pt + 5 * 8, (page | P | RW | US).to_bytes(8, "little"))
        self.memory.write(page, b"K" * PAGE_SIZE)
        self.space = AddressSpace(self.frames, {256: pdpt | P | RW})
        self.pa: dict[int, int] = {}

    def map(self, va: int, *, writable: bool = True, user: bool = True, fill: bytes = b"") -> int:
        self.frames.alloc(FrameOwner.USER)  # a spacer, so neighbouring pages are not adjacent
        pa = self.frames.alloc(FrameOwner.USER)
        self.memory.write(pa, fill.ljust(PAGE_SIZE, b"\0")[:PAGE_SIZE])
        self.space.map(va, pa, writable=writable, executable=False, user=user)
        self.pa[va] = pa
        return pa

    def page(self, va: int) -> bytes:
        return self.memory.read(self.pa[va], PAGE_SIZE)


def efault(call: object) -> None:
    assert callable(call)
    with pytest.raises(SyscallError) as info:
        call()
    assert info.value.errno is Errno.EFAULT


def errno_of(call: object) -> Errno:
    assert callable(call)
    with pytest.raises(SyscallError) as info:
        call()
    return info.value.errno


@pytest.fixture
def m() -> Space:
    return Space()


# -- UserPtr ---------------------------------------------------------------------------


def test_user_ptr_addition_wraps_at_two_to_the_64() -> None:
    assert UserPtr(2**64 - 8) + 16 == UserPtr(8)
    assert UserPtr(VA) + PAGE_SIZE == UserPtr(VA + PAGE_SIZE)


# -- copies that succeed ---------------------------------------------------------------


def test_copy_in_within_a_page_returns_those_bytes(m: Space) -> None:
    m.map(VA, fill=bytes(range(256)) * 16)
    assert copy_in(m.space, UserPtr(VA + 10), 5) == bytes(range(10, 15))


def test_copy_in_across_page_boundary_joins_both_frames(m: Space) -> None:
    m.map(VA, fill=b"a" * PAGE_SIZE)
    m.map(VA + PAGE_SIZE, fill=b"b" * PAGE_SIZE)
    assert m.pa[VA + PAGE_SIZE] != m.pa[VA] + PAGE_SIZE  # physically apart
    assert copy_in(m.space, UserPtr(VA + PAGE_SIZE - 3), 6) == b"aaabbb"


def test_copy_in_spanning_three_pages_returns_every_byte(m: Space) -> None:
    for i, c in enumerate(b"xyz"):
        m.map(VA + i * PAGE_SIZE, fill=bytes([c]) * PAGE_SIZE)
    data = copy_in(m.space, UserPtr(VA + 1), 3 * PAGE_SIZE - 2)
    assert data == b"x" * (PAGE_SIZE - 1) + b"y" * PAGE_SIZE + b"z" * (PAGE_SIZE - 1)


def test_copy_in_from_read_only_page_succeeds(m: Space) -> None:
    m.map(VA, writable=False, fill=b"ro")
    assert copy_in(m.space, UserPtr(VA), 2) == b"ro"


def test_copy_in_of_zero_bytes_returns_empty(m: Space) -> None:
    assert copy_in(m.space, UserPtr(VA), 0) == b""


def test_copy_out_across_page_boundary_writes_both_frames(m: Space) -> None:
    m.map(VA)
    m.map(VA + PAGE_SIZE)
    copy_out(m.space, UserPtr(VA + PAGE_SIZE - 2), b"1234")
    assert m.page(VA)[-2:] == b"12"
    assert m.page(VA + PAGE_SIZE)[:2] == b"34"
    assert m.page(VA)[:-2] == bytes(PAGE_SIZE - 2)
    assert m.page(VA + PAGE_SIZE)[2:] == bytes(PAGE_SIZE - 2)


def test_copy_range_ending_exactly_at_user_end_succeeds(m: Space) -> None:
    m.map(LAST_PAGE)
    copy_out(m.space, UserPtr(USER_END - 4), b"tail")
    assert copy_in(m.space, UserPtr(USER_END - 4), 4) == b"tail"


# -- EFAULT ----------------------------------------------------------------------------


def test_copy_in_of_unmapped_page_returns_efault(m: Space) -> None:
    efault(lambda: copy_in(m.space, UserPtr(VA), 1))


def test_copy_in_with_unmapped_last_page_returns_efault(m: Space) -> None:
    m.map(VA)
    efault(lambda: copy_in(m.space, UserPtr(VA + PAGE_SIZE - 1), 2))


def test_copy_in_with_unmapped_middle_page_returns_efault(m: Space) -> None:
    m.map(VA)
    m.map(VA + 2 * PAGE_SIZE)
    efault(lambda: copy_in(m.space, UserPtr(VA), 3 * PAGE_SIZE))


def test_copy_in_from_supervisor_page_returns_efault(m: Space) -> None:
    m.map(VA, user=False)
    efault(lambda: copy_in(m.space, UserPtr(VA), 1))


def test_copy_in_from_kernel_half_returns_efault_even_with_user_leaf(m: Space) -> None:
    assert m.space.lookup(KERNEL_VA) is not None
    efault(lambda: copy_in(m.space, UserPtr(KERNEL_VA), 1))
    efault(lambda: copy_in(m.space, UserPtr(0xFFFF_FFFF_FFFF_F000), 1))


@pytest.mark.parametrize("addr", [1 << 47, (1 << 47) + 5 * PAGE_SIZE, 0x1234_5678_0000_0000,
                                  0xFFFF_7FFF_FFFF_F000])
def test_copy_in_from_non_canonical_address_returns_efault(m: Space, addr: int) -> None:
    # (1 << 47) + 5 pages has KERNEL_VA's table indices.
    efault(lambda: copy_in(m.space, UserPtr(addr), 1))


def test_copy_reaching_past_user_end_returns_efault(m: Space) -> None:
    m.map(LAST_PAGE)
    efault(lambda: copy_in(m.space, UserPtr(USER_END - 4), 5))
    efault(lambda: copy_out(m.space, UserPtr(USER_END - 4), b"12345"))
    assert m.page(LAST_PAGE) == bytes(PAGE_SIZE)


@pytest.mark.parametrize("length", [0, 1])
def test_copy_starting_at_user_end_returns_efault(m: Space, length: int) -> None:
    efault(lambda: copy_in(m.space, UserPtr(USER_END), length))


def test_copy_range_wrapping_two_to_the_64_returns_efault(m: Space) -> None:
    m.map(0, fill=b"z" * PAGE_SIZE)  # where a wrapped range would land
    efault(lambda: copy_in(m.space, UserPtr(2**64 - 8), 16))
    efault(lambda: copy_out(m.space, UserPtr(2**64 - 8), bytes(16)))
    assert m.page(0) == b"z" * PAGE_SIZE


def test_copy_with_length_wrapping_back_into_mapped_page_returns_efault(m: Space) -> None:
    m.map(VA)
    # VA + length is 2**64 + 8: in 64-bit arithmetic, VA + 8, inside the mapped page.
    efault(lambda: copy_in(m.space, UserPtr(VA), 2**64 - VA + 8))


def test_copy_in_with_negative_length_returns_efault(m: Space) -> None:
    m.map(VA)
    efault(lambda: copy_in(m.space, UserPtr(VA), -1))


def test_copy_out_to_read_only_page_returns_efault_and_writes_nothing(m: Space) -> None:
    m.map(VA, writable=False, fill=b"r" * PAGE_SIZE)
    efault(lambda: copy_out(m.space, UserPtr(VA), b"w"))
    assert m.page(VA) == b"r" * PAGE_SIZE


def test_copy_out_whose_last_page_is_read_only_returns_efault_and_writes_nothing(
    m: Space,
) -> None:
    m.map(VA, fill=b"a" * PAGE_SIZE)
    m.map(VA + PAGE_SIZE, writable=False, fill=b"b" * PAGE_SIZE)
    efault(lambda: copy_out(m.space, UserPtr(VA + 8), b"w" * PAGE_SIZE))
    assert m.page(VA) == b"a" * PAGE_SIZE
    assert m.page(VA + PAGE_SIZE) == b"b" * PAGE_SIZE


def test_copy_out_to_kernel_half_returns_efault_and_writes_nothing(m: Space) -> None:
    before = bytes(m.backing)
    efault(lambda: copy_out(m.space, UserPtr(KERNEL_VA), b"owned"))
    assert bytes(m.backing) == before


# -- strings ---------------------------------------------------------------------------


def test_copy_in_str_with_nul_in_first_page_returns_string(m: Space) -> None:
    m.map(VA, fill=b"/bin/init\0garbage")
    assert copy_in_str(m.space, UserPtr(VA)) == "/bin/init"


def test_copy_in_str_ending_before_unmapped_page_reads_no_further(m: Space) -> None:
    m.map(VA, fill=b"x" * (PAGE_SIZE - 3) + b"ok\0")
    assert copy_in_str(m.space, UserPtr(VA + PAGE_SIZE - 3)) == "ok"


def test_copy_in_str_across_page_boundary_returns_whole_string(m: Space) -> None:
    m.map(VA, fill=b"\0" * (PAGE_SIZE - 4) + b"/etc")
    m.map(VA + PAGE_SIZE, fill=b"/passwd\0")
    assert copy_in_str(m.space, UserPtr(VA + PAGE_SIZE - 4)) == "/etc/passwd"


def test_copy_in_str_of_empty_string_returns_empty(m: Space) -> None:
    m.map(VA)
    assert copy_in_str(m.space, UserPtr(VA)) == ""


def test_copy_in_str_of_path_max_minus_one_bytes_succeeds(m: Space) -> None:
    m.map(VA, fill=b"p" * PAGE_SIZE)
    m.map(VA + PAGE_SIZE, fill=b"p" * 99 + b"\0")
    start = VA + 100
    assert copy_in_str(m.space, UserPtr(start)) == "p" * (PATH_MAX - 1)


def test_copy_in_str_without_nul_within_path_max_returns_enametoolong(m: Space) -> None:
    m.map(VA, fill=b"p" * PAGE_SIZE)
    m.map(VA + PAGE_SIZE, fill=b"p" * 100 + b"\0")  # the NUL is one byte too far
    assert errno_of(lambda: copy_in_str(m.space, UserPtr(VA + 100))) is Errno.ENAMETOOLONG


def test_copy_in_str_with_smaller_limit_returns_enametoolong(m: Space) -> None:
    m.map(VA, fill=b"abcd\0")
    assert copy_in_str(m.space, UserPtr(VA), limit=5) == "abcd"
    assert errno_of(lambda: copy_in_str(m.space, UserPtr(VA), limit=4)) is Errno.ENAMETOOLONG


def test_copy_in_str_of_invalid_utf8_returns_einval(m: Space) -> None:
    m.map(VA, fill=b"bad\xff\xfe\0")
    assert errno_of(lambda: copy_in_str(m.space, UserPtr(VA))) is Errno.EINVAL


def test_copy_in_str_of_utf8_split_across_pages_returns_string(m: Space) -> None:
    word = "grün".encode()  # the two bytes of ü straddle the boundary
    m.map(VA, fill=bytes(PAGE_SIZE - 3) + word[:3])
    m.map(VA + PAGE_SIZE, fill=word[3:] + b"\0")
    assert copy_in_str(m.space, UserPtr(VA + PAGE_SIZE - 3)) == "grün"


def test_copy_in_str_of_unmapped_address_returns_efault(m: Space) -> None:
    efault(lambda: copy_in_str(m.space, UserPtr(VA)))


def test_copy_in_str_running_into_unmapped_page_returns_efault(m: Space) -> None:
    m.map(VA, fill=b"s" * PAGE_SIZE)
    efault(lambda: copy_in_str(m.space, UserPtr(VA + PAGE_SIZE - 10)))


def test_copy_in_str_from_kernel_half_returns_efault(m: Space) -> None:
    efault(lambda: copy_in_str(m.space, UserPtr(KERNEL_VA)))


# -- property: any (addr, length) against any mapping set -----------------------------

# Pages the mapping set draws from: low memory (where wrapped ranges land), an ordinary
# run, and the top of user space.
_PAGES = [0, PAGE_SIZE] + [VA + i * PAGE_SIZE for i in range(5)] + [
    USER_END - 3 * PAGE_SIZE, USER_END - 2 * PAGE_SIZE, LAST_PAGE,
]
# absent, supervisor, user read-only, user writable
_KINDS = st.sampled_from(["absent", "supervisor", "ro", "rw"])


def _addresses() -> st.SearchStrategy[int]:
    near = st.sampled_from([*_PAGES, USER_END, 1 << 47, KERNEL_VA, 2**64 - PAGE_SIZE])
    return st.one_of(
        st.builds(lambda base, off: (base + off) % 2**64, near,
                  st.integers(-2 * PAGE_SIZE, 2 * PAGE_SIZE)),
        st.integers(0, 2**64 - 1),
    )


def _lengths() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 3 * PAGE_SIZE), st.integers(0, 2**64))


def _expect_ok(kinds: dict[int, str], addr: int, length: int, write: bool) -> bool:
    """The rule, stated directly: below USER_END and every page user (and writable)."""
    if addr >= USER_END or addr + length > USER_END:
        return False
    if length == 0:
        return True  # an empty range below USER_END touches no page
    allowed = {"rw"} if write else {"ro", "rw"}
    first, last = addr // PAGE_SIZE, (addr + length - 1) // PAGE_SIZE
    return all(kinds.get(p * PAGE_SIZE, "absent") in allowed for p in range(first, last + 1))


def _space_for(kinds: dict[int, str]) -> tuple[Space, bytes]:
    m = Space(pages=48)
    for va, kind in kinds.items():
        if kind != "absent":
            fill = bytes((va // PAGE_SIZE + i) % 251 for i in range(PAGE_SIZE))
            m.map(va, writable=kind == "rw", user=kind != "supervisor", fill=fill)
    return m, bytes(m.backing)


def _model_read(m: Space, addr: int, length: int) -> bytes:
    out = bytearray()
    for i in range(length):
        va = addr + i
        page = va - va % PAGE_SIZE
        out += m.memory.read(m.pa[page] + va % PAGE_SIZE, 1)
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({va: _KINDS for va in _PAGES}), _addresses(), _lengths())
def test_copy_in_succeeds_exactly_when_every_page_is_user_and_below_user_end(
    kinds: dict[int, str], addr: int, length: int
) -> None:
    m, before = _space_for(kinds)
    ok = _expect_ok(kinds, addr, length, write=False)
    try:
        data = copy_in(m.space, UserPtr(addr), length)
    except SyscallError as e:
        assert e.errno is Errno.EFAULT
        assert not ok
    else:
        assert ok
        assert data == _model_read(m, addr, length)
    assert bytes(m.backing) == before


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({va: _KINDS for va in _PAGES}), _addresses(),
       st.integers(0, 3 * PAGE_SIZE))
def test_copy_out_succeeds_exactly_when_every_page_is_user_writable_and_below_user_end(
    kinds: dict[int, str], addr: int, length: int
) -> None:
    m, before = _space_for(kinds)
    ok = _expect_ok(kinds, addr, length, write=True)
    data = bytes((7 * i + 1) % 256 for i in range(length))
    try:
        copy_out(m.space, UserPtr(addr), data)
    except SyscallError as e:
        assert e.errno is Errno.EFAULT
        assert not ok
        assert bytes(m.backing) == before
    else:
        assert ok
        expected = bytearray(before)
        for i, byte in enumerate(data):
            va = addr + i
            expected[m.pa[va - va % PAGE_SIZE] + va % PAGE_SIZE] = byte
        assert m.backing == expected
