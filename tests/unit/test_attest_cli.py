"""Unit tests of ``copra attest`` (copra.attest.cli), run through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from copra.attest.cli import attest
from copra.hw.snp import SnpFirmware

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "snp"
MILAN_HEX = VECTORS / "virtee-sev" / "report_milan.hex"
MILAN_VCEK = VECTORS / "virtee-sev" / "vcek_milan.der"
MILAN_CHAIN = VECTORS / "virtee-sev" / "cert_chain_milan"
TRUSTEE_BIN = VECTORS / "trustee" / "test-report.bin"
TRUSTEE_VCEK = VECTORS / "trustee" / "test-vcek.der"
MILAN_BUNDLE = VECTORS / "trustee" / "milan_ask_ark_asvk.pem"
VLEK_BIN = VECTORS / "trustee" / "test-vlek-report.bin"
VLEK = VECTORS / "trustee" / "test-vlek.der"
AT = ["--at", "2025-06-01"]


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(attest, [str(a) for a in args])


def verify_milan(*extra: str | Path) -> Result:
    return run("verify", MILAN_HEX, "--vcek", MILAN_VCEK, "--chain", MILAN_CHAIN, *AT, *extra)


@pytest.fixture(scope="module")
def chip(tmp_path_factory: pytest.TempPathFactory) -> SnpFirmware:
    return SnpFirmware.create(tmp_path_factory.mktemp("cli") / "chip", key_size=2048)


@pytest.fixture(scope="module")
def emulated(chip: SnpFirmware, tmp_path_factory: pytest.TempPathFactory) -> Path:
    guest = chip.launch_start()
    guest.launch_update(0, b"image")
    guest.launch_finish()
    path = tmp_path_factory.mktemp("cli-report") / "report.bin"
    path.write_bytes(guest.get_report(b"\x11" * 64, 0))
    return path


def test_verify_genuine_hex_report_exits_0_and_prints_fields() -> None:
    result = verify_milan()
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: report verified, signed by a VCEK (Milan-B0)")
    assert "MEASUREMENT" in result.output
    assert "REPORTED_TCB       bl=3 tee=0 snp=8 ucode=115" in result.output


def test_verify_genuine_raw_report_with_bundle_chain_exits_0() -> None:
    result = run("verify", TRUSTEE_BIN, "--vcek", TRUSTEE_VCEK, "--chain", MILAN_BUNDLE, *AT)
    assert result.exit_code == 0, result.output


def test_verify_tampered_report_exits_1_with_one_line_reason(tmp_path: Path) -> None:
    raw = bytearray(TRUSTEE_BIN.read_bytes())
    raw[0x90] ^= 1  # MEASUREMENT
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(raw))
    result = run("verify", bad, "--vcek", TRUSTEE_VCEK, "--chain", MILAN_BUNDLE, *AT)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("verification failed (SignatureError)")
    assert "Traceback" not in result.output


def test_verify_malformed_report_file_exits_1_naming_malformed_report(tmp_path: Path) -> None:
    bad = tmp_path / "short.bin"
    bad.write_bytes(b"\0" * 100)
    result = run("verify", bad, "--vcek", TRUSTEE_VCEK, "--chain", MILAN_BUNDLE)
    assert result.exit_code == 1
    assert "MalformedReport" in result.output


def test_verify_expired_vlek_exits_1_with_certificate_expired() -> None:
    result = run("verify", VLEK_BIN, "--vcek", VLEK, "--chain", MILAN_BUNDLE, "--at", "2026-01-01")
    assert result.exit_code == 1
    assert "CertificateExpired" in result.output


def test_verify_emulated_report_with_its_trust_root_exits_0(
    chip: SnpFirmware, emulated: Path
) -> None:
    state = chip.state_dir
    result = run(
        "verify", emulated, "--vcek", state / "vcek.pem", "--chain", state / "ask.pem",
        "--trust-root", state / "ark.pem", "--report-data", "11" * 64, "--vmpl", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_verify_emulated_report_against_amd_roots_exits_1_with_chain_reason(
    chip: SnpFirmware, emulated: Path
) -> None:
    state = chip.state_dir
    result = run("verify", emulated, "--vcek", state / "vcek.pem", "--chain", state / "ask.pem")
    assert result.exit_code == 1
    assert result.output.startswith("verification failed (UntrustedRoot)")


@pytest.mark.parametrize(
    ("option", "error"),
    [
        (["--vmpl", "1"], "VmplMismatch"),
        (["--min-tcb", "bl=3,tee=0,snp=9,ucode=115"], "TcbTooOld"),
        (["--measurement", "00" * 48], "MeasurementMismatch"),
        (["--report-data", "00"], "ReportDataMismatch"),
        (["--host-data", "01" * 32], "HostDataMismatch"),
    ],
)
def test_verify_policy_option_violated_exits_1_naming_it(option: list[str], error: str) -> None:
    result = verify_milan(*option)
    assert result.exit_code == 1
    assert f"({error})" in result.output


def test_verify_policy_options_satisfied_exit_0() -> None:
    measurement = (
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb424"
        "64bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    )
    result = verify_milan(
        "--no-debug", "--vmpl", "0", "--min-tcb", "bl=3,tee=0,snp=8,ucode=115",
        "--measurement", measurement,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_verify_bad_hex_option_exits_2_as_usage_error() -> None:
    result = verify_milan("--measurement", "xyz")
    assert result.exit_code == 2
    assert "is not hex" in result.output


def test_verify_bad_min_tcb_option_exits_2_as_usage_error() -> None:
    result = verify_milan("--min-tcb", "bogus=1")
    assert result.exit_code == 2


def test_verify_missing_vcek_option_exits_2() -> None:
    result = run("verify", MILAN_HEX, "--chain", MILAN_CHAIN)
    assert result.exit_code == 2


def test_show_decodes_report_without_certificates() -> None:
    result = run("show", VLEK_BIN)
    assert result.exit_code == 0, result.output
    assert "KEY_INFO           signing_key=VLEK" in result.output
    assert "CPUID              family 0x19 model 0x1 stepping 0x1 (Milan)" in result.output


def test_show_malformed_report_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hex"
    bad.write_text("00" * 10)
    result = run("show", bad)
    assert result.exit_code == 1
    assert result.output.startswith("malformed report:")


def test_verify_vcek_with_duplicate_extension_fails_in_one_line_without_traceback(
    chip: SnpFirmware, emulated: Path, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = chip.vcek.public_bytes(Encoding.DER)
    struct_version = bytes.fromhex("06092b060104019c780101")  # OID 1.3.6.1.4.1.3704.1.1
    bad = tmp_path / "vcek.der"  # r03: structVersion renamed productName, which is then twice
    bad.write_bytes(der.replace(struct_version, bytes.fromhex("06092b060104019c780102")))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(chip.cert_chain_pem())
    result = run("verify", emulated, "--vcek", bad, "--chain", chain,
                 "--trust-root", chip.state_dir / "ark.pem")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("verification failed (CertificateFormatError): ")
    assert "appears twice" in result.output and result.output.count("\n") == 1


@pytest.mark.parametrize(
    "spelling", ["bl=3,tee=0,snp=9,ucode=115", "bootloader=3,tee=0,snp=9,microcode=115"]
)
def test_verify_min_tcb_accepts_both_component_spellings(spelling: str) -> None:
    result = verify_milan("--min-tcb", spelling)
    assert result.exit_code == 1 and "TcbTooOld" in result.output

