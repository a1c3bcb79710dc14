"""The SEV-SNP ATTESTATION_REPORT codec, for verifiers and brokers.

The definitions live in :mod:`copra.hw.snp_report` (the report is a firmware
structure, and the emulated firmware in the hw layer builds it; layers import only
downwards). This module is the attestation side's name for them: every public name is
re-exported unchanged.
"""

from __future__ import annotations

from copra.hw.snp_report import (
    AMD_OID_ARC,
    REPORT_SIZE,
    SIG_ALGO_ECDSA_P384_SHA384,
    SIGNATURE_COMPONENT_SIZE,
    SIGNED_SIZE,
    SUPPORTED_VERSIONS,
    TCB_COMPONENT_OIDS,
    AttestationReport,
    FirmwareVersion,
    Generation,
    GuestPolicy,
    InvalidFieldError,
    KeyInfo,
    PlatformInfo,
    PolicyFlags,
    ReportFormatError,
    ReportLengthError,
    ReportVersionError,
    ReservedFieldError,
    Signature,
    SigningKey,
    TcbLayout,
    TcbVersion,
    UnknownGenerationError,
    VcekOid,
    decode_report_file,
    der_ia5string,
    der_integer,
    layout_for_family,
    parse_der_ia5string,
    parse_der_integer,
    parse_hwid,
)

__all__ = [
    "AMD_OID_ARC",
    "REPORT_SIZE",
    "SIGNATURE_COMPONENT_SIZE",
    "SIGNED_SIZE",
    "SIG_ALGO_ECDSA_P384_SHA384",
    "SUPPORTED_VERSIONS",
    "TCB_COMPONENT_OIDS",
    "AttestationReport",
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
    "decode_report_file",
    "der_ia5string",
    "der_integer",
    "layout_for_family",
    "parse_der_ia5string",
    "parse_der_integer",
    "parse_hwid",
]
