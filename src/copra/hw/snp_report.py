"""The SEV-SNP ATTESTATION_REPORT structure and the VCEK/VLEK extensions that bind to it.

Layout: SEV Secure Nested Paging Firmware ABI Specification (AMD pub. 56860), table
"ATTESTATION_REPORT Structure", report versions 2, 3, 4 and 5; checked field by field
against the layouts in virtee/sev and go-sev-guest, which agree, and against five
genuine reports (tests/vectors/snp). The report is 0x4A0 = 1184 bytes, every integer
little-endian. Notes on versions:

* v2 has no CPUID fields (0x188..0x19F reserved) and no mitigation vectors.
* v3 adds CPUID_FAM_ID/CPUID_MOD_ID/CPUID_STEP at 0x188..0x18A. v4 is laid out like
  v3 (as virtee/sev treats it).
* v5 adds LAUNCH_MIT_VECTOR (0x1F8) and CURRENT_MIT_VECTOR (0x200).

TCB_VERSION has two layouts (:class:`TcbLayout`): Milan and Genoa (family 0x19) put
BOOT_LOADER, TEE, 4 reserved bytes, SNP, MICROCODE; Turin (family 0x1A) puts FMC,
BOOT_LOADER, TEE, SNP, 3 reserved bytes, MICROCODE. A v3+ report names its family and
model, so :meth:`AttestationReport.parse` picks the layout from them; a v2 report does
not, so the caller may say which (the verifier derives it from the VCEK's product
name) and the default is the Milan/Genoa layout: every chip that emits v2 reports is a
Milan or Genoa part.

Strictness: every reserved byte and every reserved bit must be zero (POLICY bit 17
must be one), the signature's 368-byte tail included, and KEY_INFO.SIGNING_KEY must
be one of the defined values. Consequently every report that parses has exactly one
encoding and ``AttestationReport.parse(b).to_bytes() == b``. A future firmware that
defines a new bit is rejected until this module learns it: a silent pass-through of
unknown semantics is worse than a clear error.

The codec has no state and takes no locks; every value is immutable. It lives in the
hw layer because the report is a firmware structure that the emulated firmware
(:mod:`copra.hw.snp`) builds; verifiers and brokers in the attest layer import it
from here.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from typing import ClassVar, Final

__all__ = [
    "AMD_OID_ARC",
    "MAX_CERT_ENTRIES",
    "REPORT_SIZE",
    "SIGNATURE_COMPONENT_SIZE",
    "SIGNED_SIZE",
    "SIG_ALGO_ECDSA_P384_SHA384",
    "SUPPORTED_VERSIONS",
    "TCB_COMPONENT_OIDS",
    "AttestationReport",
    "CertGuid",
    "CertTableError",
    "FirmwareVersion",
    "Generation",
    "GuestPolicy",
    "InvalidFieldError",
    "KeyInfo",
    "PlatformInfo",
    "PolicyFlags",
    "ReportFormatError",
    "ReportLengthError",
    "ReportVersionError",
    "ReservedFieldError",
    "Signature",
    "SigningKey",
    "TcbLayout",
    "TcbVersion",
    "UnknownGenerationError",
    "VcekOid",
    "build_cert_table",
    "decode_report_file",
    "der_ia5string",
    "der_integer",
    "layout_for_family",
    "parse_cert_table",
    "parse_der_ia5string",
    "parse_der_integer",
    "parse_hwid",
]

REPORT_SIZE: Final = 0x4A0
#: The report signature covers bytes [0, SIGNED_SIZE).
SIGNED_SIZE: Final = 0x2A0
#: Size of each little-endian signature component field (R at 0x2A0, S at 0x2E8).
SIGNATURE_COMPONENT_SIZE: Final = 72
SUPPORTED_VERSIONS: Final = frozenset({2, 3, 4, 5})
#: SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only one defined.
SIG_ALGO_ECDSA_P384_SHA384: Final = 1


class ReportFormatError(ValueError):
    """A byte string is not a well-formed attestation report. Base of the codec's errors."""


class ReportLengthError(ReportFormatError):
    """The input is not exactly 1184 bytes (or, as hex text, does not decode to them)."""


class ReportVersionError(ReportFormatError):
    """VERSION is not one this codec knows (2, 3, 4 or 5)."""


class ReservedFieldError(ReportFormatError):
    """A reserved byte or bit is non-zero (or POLICY bit 17, which must be one, is zero)."""


class InvalidFieldError(ReportFormatError):
    """A defined field holds a value the specification reserves."""


class UnknownGenerationError(ReportFormatError):
    """A v3+ report names a CPU family whose TCB layout is unknown; pass ``layout=``."""


# ---------------------------------------------------------------------------------------
# TCB_VERSION


class TcbLayout(Enum):
    """Which byte of a TCB_VERSION holds which security patch level."""

    MILAN_GENOA = "milan-genoa"  #: bl, tee, 4 reserved, snp, ucode
    TURIN = "turin"  #: fmc, bl, tee, snp, 3 reserved, ucode


class Generation(Enum):
    """An EPYC generation with SEV-SNP; the value is AMD's product name (as in KDS URLs)."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @property
    def tcb_layout(self) -> TcbLayout:
        return TcbLayout.TURIN if self is Generation.TURIN else TcbLayout.MILAN_GENOA

    @classmethod
    def from_cpuid(cls, family: int, model: int) -> Generation | None:
        """The generation of a CPUID family/model pair (virtee/sev's table), None if unknown."""
        if family == 0x19:
            if model <= 0x0F:
                return cls.MILAN
            if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
                return cls.GENOA
            return None
        if family == 0x1A and model <= 0x11:
            return cls.TURIN
        return None

    @classmethod
    def from_product_name(cls, name: str) -> Generation | None:
        """The generation named by a VCEK productName ("Milan-B0", "Genoa", "Turin")."""
        base = name.split("-", 1)[0]
        for gen in cls:
            if gen.value == base:
                return gen
        return None


def layout_for_family(family: int) -> TcbLayout | None:
    """The TCB layout a CPUID family uses: 0x19 Milan/Genoa, 0x1A (Turin, Venice) Turin."""
    if family == 0x19:
        return TcbLayout.MILAN_GENOA
    if family == 0x1A:
        return TcbLayout.TURIN
    return None


@dataclass(frozen=True)
class TcbVersion:
    """One TCB_VERSION: the security patch level of each firmware component.

    ``fmc`` is None exactly for the Milan/Genoa layout, which has no FMC byte.
    """

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def __post_init__(self) -> None:
        for name in ("bootloader", "tee", "snp", "microcode", "fmc"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0xFF:
                raise ValueError(f"TCB component {name}={value} is not a byte")

    @property
    def layout(self) -> TcbLayout:
        return TcbLayout.MILAN_GENOA if self.fmc is None else TcbLayout.TURIN

    @classmethod
    def from_bytes(cls, raw: bytes, layout: TcbLayout) -> TcbVersion:
        if len(raw) != 8:
            raise ReportLengthError(f"TCB_VERSION is 8 bytes, got {len(raw)}")
        if layout is TcbLayout.MILAN_GENOA:
            if any(raw[2:6]):
                raise ReservedFieldError(f"TCB_VERSION {raw.hex()}: bytes 2-5 are reserved")
            return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])
        if any(raw[4:7]):
            raise ReservedFieldError(f"TCB_VERSION {raw.hex()}: bytes 4-6 are reserved (Turin)")
        return cls(fmc=raw[0], bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7])

    @classmethod
    def from_int(cls, value: int, layout: TcbLayout) -> TcbVersion:
        return cls.from_bytes(value.to_bytes(8, "little"), layout)

    def to_bytes(self) -> bytes:
        if self.fmc is None:
            return bytes([self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode])
        return bytes([self.fmc, self.bootloader, self.tee, self.snp, 0, 0, 0, self.microcode])

    def to_int(self) -> int:
        return int.from_bytes(self.to_bytes(), "little")

    def components(self) -> dict[str, int]:
        """The defined components by name, FMC only where the layout has it."""
        out = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        out["microcode"] = self.microcode
        return out

    def meets(self, minimum: TcbVersion) -> bool:
        """Whether every component is at least ``minimum``'s (FMC only if both have one)."""
        mine = self.components()
        return all(mine.get(name, value) >= value for name, value in minimum.components().items())

    def __str__(self) -> str:
        short = {"bootloader": "bl", "microcode": "ucode"}
        return " ".join(f"{short.get(k, k)}={v}" for k, v in self.components().items())

    @classmethod
    def parse(cls, text: str) -> TcbVersion:
        """A TCB from ``bl=3,tee=0,snp=8,ucode=115[,fmc=1]`` — the one spelling both
        copra CLIs take (``--min-tcb``). Components are separated by commas and/or
        spaces (so ``parse(str(tcb)) == tcb``) and named short (``bl``, ``ucode``) or
        long (``bootloader``, ``microcode``); bootloader, tee, snp and microcode each
        exactly once, fmc at most once; values decimal or with a 0x/0o/0b prefix.
        Raises ``ValueError`` naming the problem."""
        values: dict[str, int] = {}
        for part in text.replace(",", " ").split():
            name, sep, number = part.partition("=")
            component = _TCB_ALIASES.get(name)
            if not sep or component is None:
                known = ", ".join(sorted(_TCB_ALIASES))
                raise ValueError(f"{part!r} is not NAME=N with NAME one of {known}")
            if component in values:
                raise ValueError(f"{component} is given twice")
            try:
                values[component] = int(number, 0)
            except ValueError:
                raise ValueError(f"{part!r}: {number!r} is not a number") from None
        missing = [c for c in ("bootloader", "tee", "snp", "microcode") if c not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(**values)


#: Component names :meth:`TcbVersion.parse` accepts, short and long.
_TCB_ALIASES: Final = {
    "bl": "bootloader",
    "bootloader": "bootloader",
    "tee": "tee",
    "snp": "snp",
    "ucode": "microcode",
    "microcode": "microcode",
    "fmc": "fmc",
}


# ---------------------------------------------------------------------------------------
# POLICY, PLATFORM_INFO, KEY_INFO


class PolicyFlags(IntFlag):
    """The single-bit fields of the guest POLICY (bits 16..25; bit 17 is reserved-one)."""

    SMT = 1 << 16
    MIGRATE_MA = 1 << 18
    DEBUG = 1 << 19
    SINGLE_SOCKET = 1 << 20
    CXL_ALLOW = 1 << 21
    MEM_AES_256_XTS = 1 << 22
    RAPL_DIS = 1 << 23
    CIPHERTEXT_HIDING = 1 << 24
    PAGE_SWAP_DISABLE = 1 << 25


_POLICY_RESERVED_ONE: Final = 1 << 17
_POLICY_DEFINED: Final = (
    0xFFFF
    | _POLICY_RESERVED_ONE
    | int(
        PolicyFlags.SMT
        | PolicyFlags.MIGRATE_MA
        | PolicyFlags.DEBUG
        | PolicyFlags.SINGLE_SOCKET
        | PolicyFlags.CXL_ALLOW
        | PolicyFlags.MEM_AES_256_XTS
        | PolicyFlags.RAPL_DIS
        | PolicyFlags.CIPHERTEXT_HIDING
        | PolicyFlags.PAGE_SWAP_DISABLE
    )
)

_POLICY_FLAG_BITS: Final = _POLICY_DEFINED & ~0xFFFF & ~_POLICY_RESERVED_ONE


@dataclass(frozen=True)
class GuestPolicy:
    """The guest POLICY set at launch: minimum firmware ABI and the flag bits."""

    abi_major: int = 0
    abi_minor: int = 0
    flags: PolicyFlags = PolicyFlags.SMT

    def __post_init__(self) -> None:
        if not (0 <= self.abi_major <= 0xFF and 0 <= self.abi_minor <= 0xFF):
            raise ValueError("policy ABI major/minor must be bytes")
        if int(self.flags) & ~_POLICY_DEFINED:
            raise ValueError(f"policy flags {int(self.flags):#x} hold undefined bits")

    @classmethod
    def from_int(cls, value: int) -> GuestPolicy:
        if value & ~_POLICY_DEFINED:
            raise ReservedFieldError(f"POLICY {value:#x}: bits above 25 are reserved")
        if not value & _POLICY_RESERVED_ONE:
            raise ReservedFieldError(f"POLICY {value:#x}: reserved bit 17 must be 1")
        flags = PolicyFlags(value & _POLICY_FLAG_BITS)
        return cls(abi_major=(value >> 8) & 0xFF, abi_minor=value & 0xFF, flags=flags)

    def to_int(self) -> int:
        return self.abi_minor | (self.abi_major << 8) | _POLICY_RESERVED_ONE | int(self.flags)

    @property
    def debug(self) -> bool:
        return PolicyFlags.DEBUG in self.flags

    @property
    def migrate_ma(self) -> bool:
        return PolicyFlags.MIGRATE_MA in self.flags


class PlatformInfo(IntFlag):
    """PLATFORM_INFO bits: how the platform was configured when the report was made."""

    SMT_EN = 1 << 0
    TSME_EN = 1 << 1
    ECC_EN = 1 << 2
    RAPL_DIS = 1 << 3
    CIPHERTEXT_HIDING_EN = 1 << 4
    ALIAS_CHECK_COMPLETE = 1 << 5
    SEV_TIO_EN = 1 << 7


_PLATFORM_DEFINED: Final = 0xBF


class SigningKey(IntEnum):
    """KEY_INFO.SIGNING_KEY: which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True)
class KeyInfo:
    """KEY_INFO (the "signer info" word at 0x48)."""

    signing_key: SigningKey = SigningKey.VCEK
    author_key_en: bool = False
    mask_chip_key: bool = False

    @classmethod
    def from_int(cls, value: int) -> KeyInfo:
        if value >> 5:
            raise ReservedFieldError(f"KEY_INFO {value:#x}: bits 31:5 are reserved")
        key = (value >> 2) & 0x7
        if key not in SigningKey._value2member_map_:
            raise InvalidFieldError(f"KEY_INFO.SIGNING_KEY {key} is a reserved value")
        return cls(
            signing_key=SigningKey(key),
            author_key_en=bool(value & 1),
            mask_chip_key=bool(value & 2),
        )

    def to_int(self) -> int:
        return int(self.author_key_en) | (int(self.mask_chip_key) << 1) | (self.signing_key << 2)


@dataclass(frozen=True)
class Signature:
    """The report signature: ECDSA R and S, each stored little-endian in 72 bytes."""

    r: int
    s: int

    def __post_init__(self) -> None:
        limit = 1 << (8 * SIGNATURE_COMPONENT_SIZE)
        if not (0 <= self.r < limit and 0 <= self.s < limit):
            raise ValueError("signature components must fit 72 bytes")


# ---------------------------------------------------------------------------------------
# The report


class _Off:
    """Field offsets (SNP ABI ATTESTATION_REPORT table)."""

    VERSION = 0x000
    GUEST_SVN = 0x004
    POLICY = 0x008
    FAMILY_ID = 0x010
    IMAGE_ID = 0x020
    VMPL = 0x030
    SIGNATURE_ALGO = 0x034
    CURRENT_TCB = 0x038
    PLATFORM_INFO = 0x040
    KEY_INFO = 0x048
    RESERVED_04C = 0x04C
    REPORT_DATA = 0x050
    MEASUREMENT = 0x090
    HOST_DATA = 0x0C0
    ID_KEY_DIGEST = 0x0E0
    AUTHOR_KEY_DIGEST = 0x110
    REPORT_ID = 0x140
    REPORT_ID_MA = 0x160
    REPORTED_TCB = 0x180
    CPUID_FAM_ID = 0x188
    CPUID_MOD_ID = 0x189
    CPUID_STEP = 0x18A
    RESERVED_18B = 0x18B
    CHIP_ID = 0x1A0
    COMMITTED_TCB = 0x1E0
    CURRENT_BUILD = 0x1E8
    CURRENT_MINOR = 0x1E9
    CURRENT_MAJOR = 0x1EA
    RESERVED_1EB = 0x1EB
    COMMITTED_BUILD = 0x1EC
    COMMITTED_MINOR = 0x1ED
    COMMITTED_MAJOR = 0x1EE
    RESERVED_1EF = 0x1EF
    LAUNCH_TCB = 0x1F0
    LAUNCH_MIT_VECTOR = 0x1F8
    CURRENT_MIT_VECTOR = 0x200
    RESERVED_208 = 0x208
    SIGNATURE_R = 0x2A0
    SIGNATURE_S = 0x2E8
    SIGNATURE_TAIL = 0x330


#: (field name, size) of the fixed-size byte-string fields, in layout order.
_BYTE_FIELDS: Final = (
    ("family_id", _Off.FAMILY_ID, 16),
    ("image_id", _Off.IMAGE_ID, 16),
    ("report_data", _Off.REPORT_DATA, 64),
    ("measurement", _Off.MEASUREMENT, 48),
    ("host_data", _Off.HOST_DATA, 32),
    ("id_key_digest", _Off.ID_KEY_DIGEST, 48),
    ("author_key_digest", _Off.AUTHOR_KEY_DIGEST, 48),
    ("report_id", _Off.REPORT_ID, 32),
    ("report_id_ma", _Off.REPORT_ID_MA, 32),
    ("chip_id", _Off.CHIP_ID, 64),
)


def _u32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def _u64(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 8], "little")


def _require_zero(data: bytes, start: int, end: int) -> None:
    if any(data[start:end]):
        raise ReservedFieldError(f"reserved bytes {start:#05x}..{end - 1:#05x} are not zero")


@dataclass(frozen=True)
class FirmwareVersion:
    """A firmware version as the report stores it: build, minor, major bytes."""

    major: int
    minor: int
    build: int

    def __post_init__(self) -> None:
        if not all(0 <= v <= 0xFF for v in (self.major, self.minor, self.build)):
            raise ValueError("firmware version components must be bytes")

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}"


@dataclass(frozen=True)
class AttestationReport:
    """One SEV-SNP ATTESTATION_REPORT, every field decoded.

    ``cpuid_*`` are None exactly for v2 reports; ``*_mit_vector`` are None exactly
    below v5. All four TCB values share one layout.
    """

    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: PlatformInfo
    key_info: KeyInfo
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_version: FirmwareVersion
    committed_version: FirmwareVersion
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature: Signature

    SIZE: ClassVar[int] = REPORT_SIZE

    def __post_init__(self) -> None:
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(f"report version {self.version} is not supported")
        for name, _off, size in _BYTE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise ValueError(f"{name} must be {size} bytes")
        for name in ("guest_svn", "vmpl", "signature_algo"):
            if not 0 <= getattr(self, name) <= 0xFFFF_FFFF:
                raise ValueError(f"{name} must be a u32")
        if int(self.platform_info) & ~_PLATFORM_DEFINED:
            raise ValueError("platform_info holds undefined bits")
        cpuid = (self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step)
        if self.version >= 3:
            if any(v is None or not 0 <= v <= 0xFF for v in cpuid):
                raise ValueError("v3+ reports carry CPUID family, model and stepping bytes")
        elif any(v is not None for v in cpuid):
            raise ValueError("v2 reports have no CPUID fields")
        mit = (self.launch_mit_vector, self.current_mit_vector)
        if self.version >= 5:
            if any(v is None or not 0 <= v < 1 << 64 for v in mit):
                raise ValueError("v5 reports carry two u64 mitigation vectors")
        elif any(v is not None for v in mit):
            raise ValueError("reports below v5 have no mitigation vectors")
        layouts = {
            t.layout
            for t in (self.current_tcb, self.reported_tcb, self.committed_tcb, self.launch_tcb)
        }
        if len(layouts) != 1:
            raise ValueError("all TCB values of a report must share one layout")

    # -- decoding ---------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, *, layout: TcbLayout | None = None) -> AttestationReport:
        """Decode a raw 1184-byte report; raise a :class:`ReportFormatError` if malformed.

        ``layout`` forces the TCB layout; without it a v3+ report's CPUID family
        decides and a v2 report uses the Milan/Genoa layout.
        """
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            raise ReportLengthError(f"a report is {REPORT_SIZE} bytes, got {len(data)}")
        version = _u32(data, _Off.VERSION)
        if version not in SUPPORTED_VERSIONS:
            raise ReportVersionError(f"report version {version} is not supported (2, 3, 4, 5)")

        _require_zero(data, _Off.RESERVED_04C, _Off.REPORT_DATA)
        if version >= 3:
            fam, mod, step = data[_Off.CPUID_FAM_ID], data[_Off.CPUID_MOD_ID], data[_Off.CPUID_STEP]
            cpuid: tuple[int | None, int | None, int | None] = (fam, mod, step)
            _require_zero(data, _Off.RESERVED_18B, _Off.CHIP_ID)
        else:
            fam = None
            cpuid = (None, None, None)
            _require_zero(data, _Off.CPUID_FAM_ID, _Off.CHIP_ID)
        _require_zero(data, _Off.RESERVED_1EB, _Off.RESERVED_1EB + 1)
        _require_zero(data, _Off.RESERVED_1EF, _Off.RESERVED_1EF + 1)
        if version >= 5:
            launch_mit: int | None = _u64(data, _Off.LAUNCH_MIT_VECTOR)
            current_mit: int | None = _u64(data, _Off.CURRENT_MIT_VECTOR)
            _require_zero(data, _Off.RESERVED_208, SIGNED_SIZE)
        else:
            launch_mit = current_mit = None
            _require_zero(data, _Off.LAUNCH_MIT_VECTOR, SIGNED_SIZE)
        _require_zero(data, _Off.SIGNATURE_TAIL, REPORT_SIZE)

        if layout is None:
            if fam is None:
                layout = TcbLayout.MILAN_GENOA
            else:
                layout = layout_for_family(fam)
                if layout is None:
                    raise UnknownGenerationError(
                        f"CPUID family {fam:#x} has no known TCB layout; pass layout="
                    )

        platform = _u64(data, _Off.PLATFORM_INFO)
        if platform & ~_PLATFORM_DEFINED:
            raise ReservedFieldError(f"PLATFORM_INFO {platform:#x} sets reserved bits")

        def tcb(off: int) -> TcbVersion:
            assert layout is not None
            return TcbVersion.from_bytes(data[off : off + 8], layout)

        fields: dict[str, bytes] = {
            name: data[off : off + size] for name, off, size in _BYTE_FIELDS
        }
        return cls(
            version=version,
            guest_svn=_u32(data, _Off.GUEST_SVN),
            policy=GuestPolicy.from_int(_u64(data, _Off.POLICY)),
            vmpl=_u32(data, _Off.VMPL),
            signature_algo=_u32(data, _Off.SIGNATURE_ALGO),
            current_tcb=tcb(_Off.CURRENT_TCB),
            platform_info=PlatformInfo(platform),
            key_info=KeyInfo.from_int(_u32(data, _Off.KEY_INFO)),
            reported_tcb=tcb(_Off.REPORTED_TCB),
            cpuid_fam_id=cpuid[0],
            cpuid_mod_id=cpuid[1],
            cpuid_step=cpuid[2],
            committed_tcb=tcb(_Off.COMMITTED_TCB),
            current_version=FirmwareVersion(
                major=data[_Off.CURRENT_MAJOR],
                minor=data[_Off.CURRENT_MINOR],
                build=data[_Off.CURRENT_BUILD],
            ),
            committed_version=FirmwareVersion(
                major=data[_Off.COMMITTED_MAJOR],
                minor=data[_Off.COMMITTED_MINOR],
                build=data[_Off.COMMITTED_BUILD],
            ),
            launch_tcb=tcb(_Off.LAUNCH_TCB),
            launch_mit_vector=launch_mit,
            current_mit_vector=current_mit,
            signature=Signature(
                r=int.from_bytes(
                    data[_Off.SIGNATURE_R : _Off.SIGNATURE_R + SIGNATURE_COMPONENT_SIZE],
                    "little",
                ),
                s=int.from_bytes(
                    data[_Off.SIGNATURE_S : _Off.SIGNATURE_S + SIGNATURE_COMPONENT_SIZE],
                    "little",
                ),
            ),
            **fields,
        )

    # -- encoding ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        out = bytearray(REPORT_SIZE)

        def put(off: int, value: bytes) -> None:
            out[off : off + len(value)] = value

        put(_Off.VERSION, self.version.to_bytes(4, "little"))
        put(_Off.GUEST_SVN, self.guest_svn.to_bytes(4, "little"))
        put(_Off.POLICY, self.policy.to_int().to_bytes(8, "little"))
        put(_Off.VMPL, self.vmpl.to_bytes(4, "little"))
        put(_Off.SIGNATURE_ALGO, self.signature_algo.to_bytes(4, "little"))
        put(_Off.CURRENT_TCB, self.current_tcb.to_bytes())
        put(_Off.PLATFORM_INFO, int(self.platform_info).to_bytes(8, "little"))
        put(_Off.KEY_INFO, self.key_info.to_int().to_bytes(4, "little"))
        for name, off, _size in _BYTE_FIELDS:
            put(off, getattr(self, name))
        put(_Off.REPORTED_TCB, self.reported_tcb.to_bytes())
        if self.cpuid_fam_id is not None:
            assert self.cpuid_mod_id is not None and self.cpuid_step is not None
            put(_Off.CPUID_FAM_ID, bytes([self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step]))
        put(_Off.COMMITTED_TCB, self.committed_tcb.to_bytes())
        cur, com = self.current_version, self.committed_version
        put(_Off.CURRENT_BUILD, bytes([cur.build, cur.minor, cur.major]))
        put(_Off.COMMITTED_BUILD, bytes([com.build, com.minor, com.major]))
        put(_Off.LAUNCH_TCB, self.launch_tcb.to_bytes())
        if self.launch_mit_vector is not None:
            put(_Off.LAUNCH_MIT_VECTOR, self.launch_mit_vector.to_bytes(8, "little"))
        if self.current_mit_vector is not None:
            put(_Off.CURRENT_MIT_VECTOR, self.current_mit_vector.to_bytes(8, "little"))
        put(_Off.SIGNATURE_R, self.signature.r.to_bytes(SIGNATURE_COMPONENT_SIZE, "little"))
        put(_Off.SIGNATURE_S, self.signature.s.to_bytes(SIGNATURE_COMPONENT_SIZE, "little"))
        return bytes(out)

    # -- conveniences -----------------------------------------------------------------

    @property
    def tcb_layout(self) -> TcbLayout:
        return self.reported_tcb.layout

    @property
    def generation(self) -> Generation | None:
        """The CPU generation named by the CPUID fields (None on v2 or unknown models)."""
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return Generation.from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers, 0x000..0x29F."""
        return self.to_bytes()[:SIGNED_SIZE]

    def with_signature(self, signature: Signature) -> AttestationReport:
        return dataclasses.replace(self, signature=signature)


def decode_report_file(data: bytes) -> bytes:
    """The raw report in a file that holds it either raw or as hex text (virtee format).

    Hex text may be upper or lower case and surrounded by whitespace. Raises
    :class:`ReportLengthError` when neither reading yields 1184 bytes.
    """
    if len(data) == REPORT_SIZE:
        return bytes(data)
    text = bytes(data).strip()
    if len(text) == 2 * REPORT_SIZE:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            pass
    raise ReportLengthError(
        f"expected a {REPORT_SIZE}-byte report or {2 * REPORT_SIZE} hex digits, "
        f"got {len(data)} bytes"
    )


# ---------------------------------------------------------------------------------------
# VCEK / VLEK certificate extensions (AMD's KDS certificates; OID arc 1.3.6.1.4.1.3704.1)

AMD_OID_ARC: Final = "1.3.6.1.4.1.3704.1"


class VcekOid(enum.StrEnum):
    """Dotted OIDs of the extensions AMD puts in VCEK and VLEK certificates."""

    STRUCT_VERSION = AMD_OID_ARC + ".1"
    PRODUCT_NAME = AMD_OID_ARC + ".2"
    BL_SPL = AMD_OID_ARC + ".3.1"
    TEE_SPL = AMD_OID_ARC + ".3.2"
    SNP_SPL = AMD_OID_ARC + ".3.3"
    SPL_4 = AMD_OID_ARC + ".3.4"
    SPL_5 = AMD_OID_ARC + ".3.5"
    SPL_6 = AMD_OID_ARC + ".3.6"
    SPL_7 = AMD_OID_ARC + ".3.7"
    UCODE_SPL = AMD_OID_ARC + ".3.8"
    FMC_SPL = AMD_OID_ARC + ".3.9"
    HW_ID = AMD_OID_ARC + ".4"
    CSP_ID = AMD_OID_ARC + ".5"


#: TCB component name -> the extension that certifies it.
TCB_COMPONENT_OIDS: Final = {
    "bootloader": VcekOid.BL_SPL,
    "tee": VcekOid.TEE_SPL,
    "snp": VcekOid.SNP_SPL,
    "microcode": VcekOid.UCODE_SPL,
    "fmc": VcekOid.FMC_SPL,
}


def der_integer(value: int) -> bytes:
    """DER encoding of a small non-negative INTEGER (as AMD encodes SPLs)."""
    if value < 0:
        raise ValueError("only non-negative integers")
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    if len(body) > 127:
        raise ValueError("integer too large")
    return bytes([0x02, len(body)]) + body


def der_ia5string(text: str) -> bytes:
    body = text.encode("ascii")
    if len(body) > 127:
        raise ValueError("string too long")
    return bytes([0x16, len(body)]) + body


def parse_der_integer(raw: bytes) -> int:
    """Decode a DER INTEGER that must be the whole of ``raw`` (short length form only)."""
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2 or raw[1] > 127:
        raise ValueError(f"not a DER INTEGER: {raw.hex()}")
    body = raw[2:]
    if len(body) > 1 and (
        (body[0] == 0 and body[1] < 0x80) or (body[0] == 0xFF and body[1] >= 0x80)
    ):
        raise ValueError(f"non-minimal DER INTEGER: {raw.hex()}")
    return int.from_bytes(body, "big", signed=True)


def parse_der_ia5string(raw: bytes) -> str:
    if len(raw) < 2 or raw[0] != 0x16 or raw[1] != len(raw) - 2 or raw[1] > 127:
        raise ValueError(f"not a DER IA5String: {raw.hex()}")
    return raw[2:].decode("ascii")


def parse_hwid(raw: bytes) -> bytes:
    """The chip ID bound by a hwID extension value: 64 bytes (Milan, Genoa) or 8 (Turin).

    AMD stores the bytes raw; some issuers wrap them in a DER OCTET STRING (04 40 ..),
    which go-sev-guest and Trustee also accept, and so does this.
    """
    if len(raw) in (8, 64):
        return bytes(raw)
    if len(raw) in (10, 66) and raw[0] == 0x04 and raw[1] == len(raw) - 2:
        return bytes(raw[2:])
    raise ValueError(f"hwID extension of {len(raw)} bytes is neither 8 nor 64 bytes")


# ---------------------------------------------------------------------------------------
# Certificate table of the extended guest request (GHCB exit 0x8000_0012; GHCB spec
# §4.1.8.1). The one codec and GUID table: the firmware builds tables with it, the SVSM
# sends them, the proxy re-encodes them and the key broker reads them.


class CertTableError(ValueError):
    """A certificate table is malformed: unterminated, too long, a blob empty or out of
    bounds, or a known GUID listed twice."""


class CertGuid(enum.Enum):
    """Certificate GUIDs of the extended-request table (RFC 4122 byte order on the
    wire). Member names are the kinds as virtee/sev's ``CertType`` serialises them
    (Trustee's ``cert_chain``), so ``CertGuid[name]`` reads one and ``.name`` writes it."""

    ARK = "c0b406a4-a803-4952-9743-3fb6014cd0ae"
    ASK = "4ab7b379-bbac-4fe4-a02f-05aef327c782"  #: also the ASVK
    VCEK = "63da758d-e664-4564-adc5-f4b93be8accd"
    VLEK = "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
    CRL = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"

    @property
    def guid(self) -> uuid.UUID:
        return uuid.UUID(self.value)


_CERT_ENTRY_SIZE: Final = 24
#: The most entries a table may list before its terminator (bounds the work per table).
MAX_CERT_ENTRIES: Final = 64


def build_cert_table(certs: Mapping[CertGuid, bytes]) -> bytes:
    """Entries (GUID, offset u32 LE, length u32 LE) in ``certs``' order, an all-zero
    terminator, then the blobs. Offsets count from the start of the buffer."""
    if len(certs) > MAX_CERT_ENTRIES:
        raise CertTableError(f"a certificate table lists at most {MAX_CERT_ENTRIES} entries")
    offset = (len(certs) + 1) * _CERT_ENTRY_SIZE
    table, blobs = bytearray(), bytearray()
    for guid, der in certs.items():
        if not der:
            raise CertTableError(f"the {guid.name} certificate is empty")
        table += guid.guid.bytes
        table += offset.to_bytes(4, "little") + len(der).to_bytes(4, "little")
        blobs += der
        offset += len(der)
    return bytes(table) + bytes(_CERT_ENTRY_SIZE) + bytes(blobs)


def parse_cert_table(buf: bytes) -> dict[CertGuid, bytes]:
    """The certificates of an extended-request table, by GUID, in table order.

    Rules: entries up to an all-zero 24-byte terminator, at most
    :data:`MAX_CERT_ENTRIES` of them; each blob non-empty and inside ``buf``; a known
    GUID at most once; unknown GUIDs are skipped. Anything else raises
    :class:`CertTableError`, and nothing else is raised.
    """
    known = {g.guid.bytes: g for g in CertGuid}
    out: dict[CertGuid, bytes] = {}
    for index in range(MAX_CERT_ENTRIES + 1):
        pos = index * _CERT_ENTRY_SIZE
        entry = buf[pos : pos + _CERT_ENTRY_SIZE]
        if len(entry) < _CERT_ENTRY_SIZE:
            raise CertTableError("certificate table has no terminating all-zero entry")
        if not any(entry):
            return out
        if index == MAX_CERT_ENTRIES:
            break
        offset = int.from_bytes(entry[16:20], "little")
        length = int.from_bytes(entry[20:24], "little")
        if length == 0 or offset + length > len(buf):
            raise CertTableError(
                f"certificate table entry {index} at {offset:#x}+{length:#x} is empty or "
                "out of bounds"
            )
        guid = known.get(bytes(entry[:16]))
        if guid is not None:
            if guid in out:
                raise CertTableError(f"certificate table lists {guid.name} twice")
            out[guid] = bytes(buf[offset : offset + length])
    raise CertTableError(f"certificate table lists more than {MAX_CERT_ENTRIES} entries")
