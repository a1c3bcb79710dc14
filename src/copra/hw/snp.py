"""Emulated SEV-SNP firmware: one persistent chip, its key chain, launch digests and reports.

copra runs on ordinary KVM, so the AMD Secure Processor is emulated here, honestly:
the report layout is SNP's (``copra.hw.snp_report``), the signatures are real ECDSA
P-384 signatures by a VCEK whose certificate chains, with AMD's extensions and AMD's
RSASSA-PSS parameters, to a self-signed RSA ARK, and MEASUREMENT is a real launch
digest of what was loaded. What is *not* real: the chip's keys live in a directory on
the host's disk, so anyone who can read that directory can forge reports. A verifier
must therefore trust an emulated chip only by configuring its ARK explicitly; AMD's
roots reject it.

State directory (created 0700; private keys 0600, PEM PKCS#8; :meth:`SnpFirmware.open`
reads it only if the effective user owns the directory and every file in it, no one
else can write the directory, no file is a symbolic link and no key is readable by
group or others: :mod:`copra.hw.hostfiles`)::

    chip.json              generation, chip id, TCB, firmware version, platform info,
                           report version, CPUID identity (written last: its presence
                           marks a complete state)
    ark.pem  ark.key       self-signed ARK (RSA, 4096 bits by default, like AMD's)
    ask.pem  ask.key       ASK signed by the ARK (RSA)
    vcek.pem vcek.key      VCEK (EC P-384) signed by the ASK, with the TCB and hwID extensions

:meth:`SnpFirmware.create` builds the state in a temporary sibling directory and
renames it into place, so a crash never leaves a half-written chip. :meth:`SnpFirmware.open`
checks everything it loads (JSON schema, key types, permissions, that each
certificate matches its key and its issuer, that the VCEK's extensions match chip.json)
and raises a :class:`StateError` subclass naming the first problem; it never repairs.
Only ``create(..., overwrite=True)`` replaces an existing state.

Launch digest (SNP firmware ABI 56860, SNP_LAUNCH_UPDATE and the PAGE_INFO table; the
same chaining sev-snp-measure implements): the digest starts as 48 zero bytes and each
measured page sets ``digest = SHA-384(PAGE_INFO)`` where PAGE_INFO (0x70 bytes) is
the previous digest, the SHA-384 of the page's 4 KiB contents (zeros for page types
whose contents are not measured), the length 0x70 (u16), the page type (u8), IS_IMI
(u8), VMPL3/2/1 permissions (u8 each), a reserved zero byte and the GPA (u64).

Locking: an :class:`SnpFirmware` is immutable after open/create. An :class:`SnpGuest`
guards its launch state and running digest with its own lock; after
``launch_finish`` it is read-only, and ``get_report`` may be called from any number of
threads at once (signing uses no shared mutable state).

Not emulated: VLEK signing, MASK_CHIP_ID/MASK_CHIP_KEY, ID blocks and author keys
(ID_KEY_DIGEST and AUTHOR_KEY_DIGEST stay zero), migration agents (REPORT_ID_MA is
all 0xFF, as with no agent), TCB updates after creation, the VMPCK message layer.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from copra.hw.hostfiles import UnsafeFile, open_state_dir, read_state_file
from copra.hw.snp_report import (
    SIG_ALGO_ECDSA_P384_SHA384,
    AttestationReport,
    CertGuid,
    FirmwareVersion,
    Generation,
    GuestPolicy,
    KeyInfo,
    PlatformInfo,
    Signature,
    SigningKey,
    TcbLayout,
    TcbVersion,
    VcekOid,
    build_cert_table,
    der_ia5string,
    der_integer,
    parse_der_integer,
    parse_hwid,
)

PAGE_SIZE: Final = 4096
DIGEST_SIZE: Final = 48
PAGE_INFO_SIZE: Final = 0x70
#: GPA under which a VMSA page is measured (all-ones, page aligned, bits 63:52 clear).
VMSA_GPA: Final = 0xFFFFFFFFF000
STATE_FORMAT: Final = 1
#: The only status a guest request fails with here (SNP ABI: INVALID_PARAM).
STATUS_INVALID_PARAM: Final = 0x16

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------
# Errors


class SnpFirmwareError(Exception):
    """Base of the emulated firmware's errors."""


class StateError(SnpFirmwareError):
    """The state directory cannot be used."""


class StateMissing(StateError):
    """There is no chip in the state directory (it is absent or empty)."""


class StateExists(StateError):
    """``create`` found a chip (or other files) in the state directory."""


class StateCorrupt(StateError):
    """The state directory holds something that is not a complete, consistent chip."""


class LaunchStateError(SnpFirmwareError):
    """A launch command came in the wrong state (update after finish, report before it)."""


class GuestRequestError(SnpFirmwareError):
    """A guest request the firmware refuses; ``status`` is the SNP ABI status code."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


# ---------------------------------------------------------------------------------------
# Launch digest


class PageType(enum.IntEnum):
    """PAGE_INFO.PAGE_TYPE (SNP_LAUNCH_UPDATE page types)."""

    NORMAL = 1
    VMSA = 2
    ZERO = 3
    UNMEASURED = 4
    SECRETS = 5
    CPUID = 6


_MEASURED_CONTENTS: Final = frozenset({PageType.NORMAL, PageType.VMSA})


def page_info(
    digest: bytes,
    contents_digest: bytes,
    page_type: PageType,
    gpa: int,
    *,
    is_imi: bool = False,
    vmpl_perms: tuple[int, int, int] = (0, 0, 0),
) -> bytes:
    """The 0x70-byte PAGE_INFO structure; ``vmpl_perms`` is (VMPL3, VMPL2, VMPL1)."""
    if len(digest) != DIGEST_SIZE or len(contents_digest) != DIGEST_SIZE:
        raise ValueError("digests are 48 bytes")
    if gpa % PAGE_SIZE or not 0 <= gpa < 1 << 64:
        raise ValueError(f"GPA {gpa:#x} is not a page-aligned u64")
    out = (
        digest
        + contents_digest
        + PAGE_INFO_SIZE.to_bytes(2, "little")
        + bytes([page_type, int(is_imi), *vmpl_perms, 0])
        + gpa.to_bytes(8, "little")
    )
    assert len(out) == PAGE_INFO_SIZE
    return out


class LaunchMeasurement:
    """A running SNP launch digest. Not locked: its owner serialises updates.

    Usable on its own to compute the MEASUREMENT a verifier should expect.
    """

    def __init__(self) -> None:
        self._digest = bytes(DIGEST_SIZE)
        self._pages = 0

    @property
    def digest(self) -> bytes:
        return self._digest

    @property
    def pages(self) -> int:
        """How many pages have been measured."""
        return self._pages

    def update_page(self, gpa: int, page_type: PageType, contents: bytes | None = None) -> None:
        """Measure one page. NORMAL and VMSA pages need their 4 KiB ``contents``; the
        other types are measured by type and GPA only and must not pass contents."""
        if page_type in _MEASURED_CONTENTS:
            if contents is None or len(contents) != PAGE_SIZE:
                raise ValueError(f"a {page_type.name} page needs exactly {PAGE_SIZE} bytes")
            contents_digest = hashlib.sha384(contents).digest()
        else:
            if contents is not None:
                raise ValueError(f"{page_type.name} pages are measured without contents")
            contents_digest = bytes(DIGEST_SIZE)
        info = page_info(self._digest, contents_digest, page_type, gpa)
        self._digest = hashlib.sha384(info).digest()
        self._pages += 1

    def update_data(self, gpa: int, data: bytes) -> None:
        """Measure ``data`` loaded at page-aligned ``gpa`` as NORMAL pages, in address
        order; the last page is zero-padded, as the firmware measures whole pages."""
        if gpa % PAGE_SIZE:
            raise ValueError(f"GPA {gpa:#x} is not page aligned")
        for off in range(0, len(data), PAGE_SIZE):
            page = data[off : off + PAGE_SIZE].ljust(PAGE_SIZE, b"\0")
            self.update_page(gpa + off, PageType.NORMAL, bytes(page))

    def update_zero(self, gpa: int, length: int) -> None:
        """Measure ``length`` bytes (whole pages) of zero-filled memory at ``gpa``."""
        if length % PAGE_SIZE:
            raise ValueError("zero ranges are whole pages")
        for off in range(0, length, PAGE_SIZE):
            self.update_page(gpa + off, PageType.ZERO)

    def update_vmsa(self, vmsa: bytes) -> None:
        """Measure one vCPU's initial state page at :data:`VMSA_GPA`."""
        self.update_page(VMSA_GPA, PageType.VMSA, vmsa)


# ---------------------------------------------------------------------------------------
# Chip identity and keys


@dataclass(frozen=True)
class ChipIdentity:
    """What a chip reports about itself (the public half of the state directory)."""

    generation: Generation
    chip_id: bytes
    tcb: TcbVersion
    firmware_version: FirmwareVersion
    platform_info: PlatformInfo
    report_version: int
    cpuid: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.chip_id) != 64:
            raise ValueError("chip_id is 64 bytes")
        if self.tcb.layout is not self.generation.tcb_layout:
            raise ValueError(f"a {self.generation.value} TCB uses the {self.generation.tcb_layout}")
        if self.report_version not in (3, 5):
            raise ValueError("the emulated firmware writes version 3 or 5 reports")
        if Generation.from_cpuid(self.cpuid[0], self.cpuid[1]) is not self.generation:
            raise ValueError(f"CPUID {self.cpuid} is not a {self.generation.value}")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "generation": self.generation.value,
            "chip_id": self.chip_id.hex(),
            "tcb": self.tcb.components(),
            "firmware_version": str(self.firmware_version),
            "platform_info": int(self.platform_info),
            "report_version": self.report_version,
            "cpuid": list(self.cpuid),
        }

    @classmethod
    def from_json(cls, obj: Any) -> ChipIdentity:
        """Decode chip.json; any deviation from the schema raises ValueError/KeyError/TypeError."""
        if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown state format (expected {STATE_FORMAT})")
        gen = Generation(obj["generation"])
        tcb_fields = obj["tcb"]
        if not isinstance(tcb_fields, dict) or not all(
            isinstance(v, int) for v in tcb_fields.values()
        ):
            raise ValueError("tcb must map component names to integers")
        expected = {"bootloader", "tee", "snp", "microcode"}
        if gen.tcb_layout is TcbLayout.TURIN:
            expected.add("fmc")
        if set(tcb_fields) != expected:
            raise ValueError(f"tcb components {sorted(tcb_fields)} != {sorted(expected)}")
        major, minor, build = (int(p) for p in str(obj["firmware_version"]).split("."))
        cpuid = obj["cpuid"]
        if not (
            isinstance(cpuid, list) and len(cpuid) == 3 and all(isinstance(c, int) for c in cpuid)
        ):
            raise ValueError("cpuid must be [family, model, stepping]")
        platform = obj["platform_info"]
        version = obj["report_version"]
        if not isinstance(platform, int) or not isinstance(version, int):
            raise ValueError("platform_info and report_version are integers")
        return cls(
            generation=gen,
            chip_id=bytes.fromhex(obj["chip_id"]),
            tcb=TcbVersion(**tcb_fields),
            firmware_version=FirmwareVersion(major=major, minor=minor, build=build),
            platform_info=PlatformInfo(platform),
            report_version=version,
            cpuid=(cpuid[0], cpuid[1], cpuid[2]),
        )


#: Defaults per generation: (CPUID family, model, stepping) and a plausible TCB.
_DEFAULTS: Final = {
    Generation.MILAN: ((0x19, 0x01, 0x01), TcbVersion(bootloader=4, tee=0, snp=24, microcode=219)),
    Generation.GENOA: ((0x19, 0x11, 0x01), TcbVersion(bootloader=10, tee=0, snp=23, microcode=84)),
    Generation.TURIN: (
        (0x1A, 0x02, 0x01),
        TcbVersion(fmc=1, bootloader=1, tee=1, snp=4, microcode=76),
    ),
}
_DEFAULT_FIRMWARE: Final = FirmwareVersion(major=1, minor=55, build=21)
_DEFAULT_PLATFORM: Final = PlatformInfo.SMT_EN | PlatformInfo.ALIAS_CHECK_COMPLETE

_AMD_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_ARK_LIFETIME: Final = timedelta(days=25 * 365)
_VCEK_LIFETIME: Final = timedelta(days=7 * 365)

_FILES: Final = ("chip.json", "ark.pem", "ark.key", "ask.pem", "ask.key", "vcek.pem", "vcek.key")


def _name(common_name: str, chip_id: bytes) -> x509.Name:
    # Same shape as AMD's names, but an organisation no one can mistake for AMD.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"chip {chip_id[:8].hex()}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "copra emulated SEV-SNP (not AMD)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _vcek_extensions(identity: ChipIdentity) -> list[tuple[str, bytes]]:
    """AMD's VCEK extensions in AMD's order, encoded as AMD encodes them."""
    tcb = identity.tcb
    turin = identity.generation is Generation.TURIN
    out: list[tuple[str, bytes]] = [
        (VcekOid.STRUCT_VERSION, der_integer(1 if turin else 0)),
        (VcekOid.PRODUCT_NAME, der_ia5string(identity.generation.value)),
    ]
    if turin:
        assert tcb.fmc is not None
        out.append((VcekOid.FMC_SPL, der_integer(tcb.fmc)))
    out += [
        (VcekOid.BL_SPL, der_integer(tcb.bootloader)),
        (VcekOid.TEE_SPL, der_integer(tcb.tee)),
        (VcekOid.SNP_SPL, der_integer(tcb.snp)),
    ]
    spare: tuple[VcekOid, ...] = (VcekOid.SPL_5, VcekOid.SPL_6, VcekOid.SPL_7)
    if not turin:
        spare = (VcekOid.SPL_4, *spare)
    out += [(oid, der_integer(0)) for oid in spare]
    out.append((VcekOid.UCODE_SPL, der_integer(tcb.microcode)))
    hwid = identity.chip_id[:8] if turin else identity.chip_id
    out.append((VcekOid.HW_ID, hwid))
    return out


def _issue(builder: x509.CertificateBuilder, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=_AMD_PSS)


def _build_chain(
    identity: ChipIdentity, key_size: int, now: datetime
) -> tuple[list[x509.Certificate], list[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]]:
    gen = identity.generation.value
    start = now.replace(microsecond=0) - timedelta(minutes=5)
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark_name = _name(f"ARK-{gen}", identity.chip_id)
    ask_name = _name(f"SEV-{gen}", identity.chip_id)
    ark_ski = x509.SubjectKeyIdentifier.from_public_key(ark_key.public_key())

    ark = _issue(
        x509.CertificateBuilder()
        .subject_name(ark_name)
        .issuer_name(ark_name)
        .public_key(ark_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _ARK_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(crl_sign=True), critical=True)
        .add_extension(ark_ski, critical=False),
        ark_key,
    )
    ask = _issue(
        x509.CertificateBuilder()
        .subject_name(ask_name)
        .issuer_name(ark_name)
        .public_key(ask_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _ARK_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(crl_sign=False), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ask_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ark_ski),
            critical=False,
        ),
        ark_key,
    )
    vcek_builder = (
        x509.CertificateBuilder()
        .subject_name(_name("SEV-VCEK", identity.chip_id))
        .issuer_name(ask_name)
        .public_key(vcek_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VCEK_LIFETIME)
    )
    for oid, value in _vcek_extensions(identity):
        vcek_builder = vcek_builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    vcek = _issue(vcek_builder, ask_key)
    return [ark, ask, vcek], [ark_key, ask_key, vcek_key]


def _key_usage(*, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _dir_is_empty(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


# ---------------------------------------------------------------------------------------
# The firmware


class SnpFirmware:
    """One emulated chip, loaded from (or created in) its state directory."""

    def __init__(
        self,
        state_dir: Path,
        identity: ChipIdentity,
        certs: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
        vcek_key: ec.EllipticCurvePrivateKey,
    ) -> None:
        """Use :meth:`open`, :meth:`create` or :meth:`open_or_create`."""
        self._state_dir = state_dir
        self._identity = identity
        self._ark, self._ask, self._vcek = certs
        self._vcek_key = vcek_key

    # -- construction -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        generation: Generation = Generation.MILAN,
        tcb: TcbVersion | None = None,
        firmware_version: FirmwareVersion = _DEFAULT_FIRMWARE,
        platform_info: PlatformInfo = _DEFAULT_PLATFORM,
        report_version: int = 3,
        key_size: int = 4096,
        clock: Clock = utc_now,
        overwrite: bool = False,
    ) -> SnpFirmware:
        """Make a new chip: random chip ID, fresh ARK -> ASK -> VCEK chain.

        ``key_size`` is the ARK's and ASK's RSA modulus (AMD uses 4096; tests may use
        2048 to save time). Raises :class:`StateExists` if ``state_dir`` is not empty
        unless ``overwrite``, which replaces whatever is there.
        """
        target = Path(state_dir)
        if target.exists() and not _dir_is_empty(target) and not overwrite:
            raise StateExists(f"{target} is not empty; pass overwrite=True to replace it")
        cpuid, default_tcb = _DEFAULTS[generation]
        chip_id = secrets.token_bytes(64)
        if generation is Generation.TURIN:
            chip_id = chip_id[:8] + bytes(56)  # Turin reports use the first 8 bytes only
        identity = ChipIdentity(
            generation=generation,
            chip_id=chip_id,
            tcb=default_tcb if tcb is None else tcb,
            firmware_version=firmware_version,
            platform_info=platform_info,
            report_version=report_version,
            cpuid=cpuid,
        )
        certs, keys = _build_chain(identity, key_size, clock())

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
        try:
            for name, cert, key in zip(("ark", "ask", "vcek"), certs, keys, strict=True):
                _write(
                    staging / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644
                )
                _write(staging / f"{name}.key", _private_pem(key), 0o600)
            text = json.dumps(identity.to_json(), indent=2, sort_keys=True) + "\n"
            _write(staging / "chip.json", text.encode(), 0o644)
            os.chmod(staging, 0o700)
            cls._install(staging, target, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(target)

    @staticmethod
    def _install(staging: Path, target: Path, *, overwrite: bool) -> None:
        if target.exists() and not _dir_is_empty(target):
            if not overwrite:
                raise StateExists(f"{target} was filled while the chip was being created")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "state")
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)  # atomic; replaces an empty directory

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str]) -> SnpFirmware:
        """Load an existing chip, checking all of it. Never creates or repairs anything."""
        path = Path(state_dir)
        if not path.is_symlink() and (not path.exists() or _dir_is_empty(path)):
            raise StateMissing(f"no emulated SNP chip in {path}")
        files = cls._read_state(path)
        try:
            identity = ChipIdentity.from_json(json.loads(files["chip.json"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateCorrupt(f"{path / 'chip.json'}: {exc}") from exc

        ark, ask, vcek = (
            cls._load_cert(path / f"{n}.pem", files[f"{n}.pem"]) for n in ("ark", "ask", "vcek")
        )
        ark_key, ask_key, vcek_key = (
            cls._load_key(path / f"{n}.key", files[f"{n}.key"]) for n in ("ark", "ask", "vcek")
        )
        if not (isinstance(ark_key, rsa.RSAPrivateKey) and isinstance(ask_key, rsa.RSAPrivateKey)):
            raise StateCorrupt(f"{path}: ARK and ASK keys must be RSA")
        if not (
            isinstance(vcek_key, ec.EllipticCurvePrivateKey)
            and isinstance(vcek_key.curve, ec.SECP384R1)
        ):
            raise StateCorrupt(f"{path}: the VCEK key must be EC P-384")
        for name, cert, key in (
            ("ark", ark, ark_key),
            ("ask", ask, ask_key),
            ("vcek", vcek, vcek_key),
        ):
            if cert.public_key() != key.public_key():
                raise StateCorrupt(f"{path}: {name}.pem does not match {name}.key")
        for name, child, issuer in (("ark", ark, ark), ("ask", ask, ark), ("vcek", vcek, ask)):
            issuer_key = issuer.public_key()
            assert isinstance(issuer_key, rsa.RSAPublicKey)
            try:
                issuer_key.verify(
                    child.signature, child.tbs_certificate_bytes, _AMD_PSS, hashes.SHA384()
                )
            except InvalidSignature:
                raise StateCorrupt(f"{path}: {name}.pem is not signed by its issuer") from None
        cls._check_vcek_matches(path, vcek, identity)
        return cls(path, identity, (ark, ask, vcek), vcek_key)

    @classmethod
    def open_or_create(cls, state_dir: str | os.PathLike[str], **create_args: Any) -> SnpFirmware:
        """Open the chip in ``state_dir``, creating it only if the directory is absent or
        empty. A corrupt state still raises :class:`StateCorrupt`."""
        try:
            return cls.open(state_dir)
        except StateMissing:
            return cls.create(state_dir, **create_args)

    @staticmethod
    def _read_state(path: Path) -> dict[str, bytes]:
        """Every state file, read through one checked descriptor of the directory
        (:mod:`copra.hw.hostfiles`: owned by the effective user, no group or other
        write, no symbolic links, keys 0600)."""
        try:
            dir_fd = open_state_dir(path)
        except UnsafeFile as exc:
            raise StateCorrupt(str(exc)) from None
        except OSError as exc:
            raise StateCorrupt(f"{path}: {exc.strerror or exc}") from exc
        files: dict[str, bytes] = {}
        missing: list[str] = []
        try:
            for name in _FILES:
                try:
                    files[name] = read_state_file(dir_fd, path / name,
                                                  private=name.endswith(".key"))
                except FileNotFoundError:
                    missing.append(name)
                except UnsafeFile as exc:
                    raise StateCorrupt(str(exc)) from None
                except OSError as exc:
                    raise StateCorrupt(f"{path / name}: {exc.strerror or exc}") from exc
        finally:
            os.close(dir_fd)
        if missing:
            raise StateCorrupt(f"{path} is incomplete: missing {', '.join(missing)}")
        return files

    @staticmethod
    def _load_cert(path: Path, data: bytes) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise StateCorrupt(f"{path}: not a PEM certificate ({exc})") from exc

    @staticmethod
    def _load_key(path: Path, data: bytes) -> PrivateKeyTypes:
        try:
            return serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise StateCorrupt(f"{path}: not an unencrypted PEM private key ({exc})") from exc

    @staticmethod
    def _check_vcek_matches(path: Path, vcek: x509.Certificate, identity: ChipIdentity) -> None:
        values: dict[str, bytes] = {}
        for ext in vcek.extensions:
            if isinstance(ext.value, x509.UnrecognizedExtension):
                values[ext.oid.dotted_string] = ext.value.value
        try:
            for oid, expected in _vcek_extensions(identity):
                raw = values[oid]
                if oid == VcekOid.HW_ID:
                    same = parse_hwid(raw) == expected
                elif oid == VcekOid.PRODUCT_NAME:
                    same = raw == expected
                else:
                    same = parse_der_integer(raw) == parse_der_integer(expected)
                if not same:
                    raise StateCorrupt(f"{path}: vcek.pem extension {oid} disagrees with chip.json")
        except (KeyError, ValueError) as exc:
            raise StateCorrupt(f"{path}: vcek.pem lacks a valid AMD extension ({exc})") from exc

    # -- the chip ---------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    @property
    def identity(self) -> ChipIdentity:
        return self._identity

    @property
    def chip_id(self) -> bytes:
        return self._identity.chip_id

    @property
    def generation(self) -> Generation:
        return self._identity.generation

    @property
    def tcb(self) -> TcbVersion:
        return self._identity.tcb

    @property
    def ark(self) -> x509.Certificate:
        """The chip's root: the only trust root under which its reports verify."""
        return self._ark

    @property
    def ask(self) -> x509.Certificate:
        return self._ask

    @property
    def vcek(self) -> x509.Certificate:
        return self._vcek

    def cert_chain_pem(self) -> bytes:
        """ASK then ARK, PEM, as AMD's KDS serves ``cert_chain``."""
        return self._ask.public_bytes(serialization.Encoding.PEM) + self._ark.public_bytes(
            serialization.Encoding.PEM
        )

    def cert_table(self) -> bytes:
        """VCEK, ASK and ARK (DER) as the extended guest request returns them."""
        der = serialization.Encoding.DER
        return build_cert_table(
            {
                CertGuid.VCEK: self._vcek.public_bytes(der),
                CertGuid.ASK: self._ask.public_bytes(der),
                CertGuid.ARK: self._ark.public_bytes(der),
            }
        )

    def launch_start(
        self,
        *,
        policy: GuestPolicy | None = None,
        host_data: bytes = bytes(32),
        family_id: bytes = bytes(16),
        image_id: bytes = bytes(16),
        guest_svn: int = 0,
    ) -> SnpGuest:
        """Begin launching a guest (SNP_LAUNCH_START): a fresh digest and REPORT_ID."""
        return SnpGuest(
            self,
            policy=GuestPolicy() if policy is None else policy,
            host_data=host_data,
            family_id=family_id,
            image_id=image_id,
            guest_svn=guest_svn,
        )

    def sign_report(self, report: AttestationReport) -> bytes:
        """``report`` encoded and signed with this chip's VCEK, whatever its fields say.

        A tooling and test hook (real firmware signs only reports it builds itself):
        it makes reports with chosen fields for verifier tests. Guests use
        :meth:`SnpGuest.get_report`.
        """
        der = self._vcek_key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        return report.with_signature(Signature(r=r, s=s)).to_bytes()


class _GuestState(enum.Enum):
    LAUNCHING = "launching"
    RUNNING = "running"


class SnpGuest:
    """One guest launched on an emulated chip: its launch digest, then its reports.

    State machine: LAUNCHING (``launch_update*`` extend the digest) -> ``launch_finish``
    -> RUNNING (``get_report``). ``_lock`` guards ``_state`` and ``_measurement``.
    """

    def __init__(
        self,
        firmware: SnpFirmware,
        *,
        policy: GuestPolicy,
        host_data: bytes,
        family_id: bytes,
        image_id: bytes,
        guest_svn: int,
    ) -> None:
        for name, value, size in (
            ("host_data", host_data, 32),
            ("family_id", family_id, 16),
            ("image_id", image_id, 16),
        ):
            if len(value) != size:
                raise ValueError(f"{name} must be {size} bytes")
        self._firmware = firmware
        self._policy = policy
        self._host_data = bytes(host_data)
        self._family_id = bytes(family_id)
        self._image_id = bytes(image_id)
        self._guest_svn = guest_svn
        self._report_id = secrets.token_bytes(32)
        self._measurement = LaunchMeasurement()
        self._state = _GuestState.LAUNCHING
        self._lock = threading.Lock()

    @property
    def policy(self) -> GuestPolicy:
        return self._policy

    @property
    def report_id(self) -> bytes:
        return self._report_id

    @property
    def measurement(self) -> bytes:
        """The launch digest so far (final once the launch is finished)."""
        with self._lock:
            return self._measurement.digest

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state is _GuestState.RUNNING

    def launch_update(self, gpa: int, data: bytes) -> None:
        """Measure ``data`` loaded at ``gpa`` (SNP_LAUNCH_UPDATE of NORMAL pages)."""
        with self._lock:
            self._require(_GuestState.LAUNCHING, "launch_update")
            self._measurement.update_data(gpa, data)

    def launch_update_page(
        self, gpa: int, page_type: PageType, contents: bytes | None = None
    ) -> None:
        """Measure one page of any type (see :meth:`LaunchMeasurement.update_page`)."""
        with self._lock:
            self._require(_GuestState.LAUNCHING, "launch_update_page")
            self._measurement.update_page(gpa, page_type, contents)

    def launch_update_vmsa(self, vmsa: bytes) -> None:
        with self._lock:
            self._require(_GuestState.LAUNCHING, "launch_update_vmsa")
            self._measurement.update_vmsa(vmsa)

    def launch_finish(self) -> bytes:
        """End the launch (SNP_LAUNCH_FINISH); returns the final MEASUREMENT."""
        with self._lock:
            self._require(_GuestState.LAUNCHING, "launch_finish")
            self._state = _GuestState.RUNNING
            return self._measurement.digest

    def get_report(self, report_data: bytes, vmpl: int) -> bytes:
        """A signed 1184-byte ATTESTATION_REPORT (MSG_REPORT_REQ, VCEK-signed).

        Raises :class:`GuestRequestError` (status INVALID_PARAM) for a REPORT_DATA that
        is not 64 bytes or a VMPL outside 0..3, and :class:`LaunchStateError` before
        ``launch_finish``.
        """
        if len(report_data) != 64:
            raise GuestRequestError(STATUS_INVALID_PARAM, "REPORT_DATA must be 64 bytes")
        if not 0 <= vmpl <= 3:
            raise GuestRequestError(STATUS_INVALID_PARAM, f"VMPL {vmpl} is not 0..3")
        with self._lock:
            self._require(_GuestState.RUNNING, "get_report")
            measurement = self._measurement.digest
        ident = self._firmware.identity
        v5 = ident.report_version >= 5
        report = AttestationReport(
            version=ident.report_version,
            guest_svn=self._guest_svn,
            policy=self._policy,
            family_id=self._family_id,
            image_id=self._image_id,
            vmpl=vmpl,
            signature_algo=SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb=ident.tcb,
            platform_info=ident.platform_info,
            key_info=KeyInfo(signing_key=SigningKey.VCEK),
            report_data=bytes(report_data),
            measurement=measurement,
            host_data=self._host_data,
            id_key_digest=bytes(48),
            author_key_digest=bytes(48),
            report_id=self._report_id,
            report_id_ma=b"\xff" * 32,
            reported_tcb=ident.tcb,
            cpuid_fam_id=ident.cpuid[0],
            cpuid_mod_id=ident.cpuid[1],
            cpuid_step=ident.cpuid[2],
            chip_id=ident.chip_id,
            committed_tcb=ident.tcb,
            current_version=ident.firmware_version,
            committed_version=ident.firmware_version,
            launch_tcb=ident.tcb,
            launch_mit_vector=0 if v5 else None,
            current_mit_vector=0 if v5 else None,
            signature=Signature(r=0, s=0),
        )
        return self._firmware.sign_report(report)

    def _require(self, state: _GuestState, what: str) -> None:
        if self._state is not state:
            raise LaunchStateError(
                f"{what} needs a {state.value} guest, this one is {self._state.value}"
            )
