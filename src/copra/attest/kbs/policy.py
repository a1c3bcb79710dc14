"""Who may read a resource: a policy per resource, checked against what the reader attested.

An attested session (or its token) carries :class:`Attested`: the MEASUREMENT, guest
POLICY, REPORTED_TCB and product (Milan, Genoa, Turin) of the report that earned it.
Each stored resource carries a :class:`ResourcePolicy`, and every read checks it
(:meth:`ResourcePolicy.check`), so workload A's session cannot read workload B's key:

* ``measurements``: the launch measurements that may read it (never empty: a
  resource is released to named workloads only);
* ``policy_mask`` / ``policy_value``: optional guest POLICY bits the report must
  show, ``POLICY & mask == value`` (e.g. DEBUG clear, SINGLE_SOCKET set);
* ``minimum_tcb``: optional minimum REPORTED_TCB *per product*; TCB numbers of one
  generation say nothing about another's, so a report of a product not listed is
  refused when any is listed (:func:`check_minimum_tcb`, shared with the broker's
  reference values).

A resource without a policy is never released. Trustee's counterpart is one OPA
(Rego) program for all resources over the attestation token's claims and the
resource path; docs/attestation-protocol.md compares the two.

Frozen dataclasses; safe from any thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from copra.hw.snp_report import Generation, PolicyFlags, TcbLayout, TcbVersion

#: Guest POLICY bits a resource policy may constrain: the single-bit flags, by name.
POLICY_BITS: Final = {flag.name.lower(): int(flag) for flag in PolicyFlags if flag.name}
_ALL_BITS: Final = sum(POLICY_BITS.values())


class PolicyDenied(Exception):
    """The reader's attested claims do not satisfy the policy; the message says which."""


@dataclass(frozen=True)
class Attested:
    """What a session's (or token's) report showed, as resource policies see it."""

    measurement: bytes
    policy: int
    reported_tcb: TcbVersion
    generation: Generation | None


def parse_product_tcb(text: str) -> tuple[Generation, TcbVersion]:
    """``PRODUCT:bl=N,tee=N,snp=N,ucode=N[,fmc=N]``; the FMC component is given for
    Turin and only for Turin (the TCB layouts differ). Raises ``ValueError``."""
    product, sep, spec = text.partition(":")
    if not sep:
        raise ValueError("expected PRODUCT:COMPONENTS, e.g. Milan:bl=4,tee=0,snp=24,ucode=219")
    try:
        generation = next(g for g in Generation if g.value.lower() == product.strip().lower())
    except StopIteration:
        names = ", ".join(g.value for g in Generation)
        raise ValueError(f"unknown product {product!r} (one of {names})") from None
    tcb = TcbVersion.parse(spec)
    if tcb.layout is not generation.tcb_layout:
        wants = "needs fmc=N" if generation.tcb_layout is TcbLayout.TURIN else "has no fmc"
        raise ValueError(f"a {generation.value} TCB {wants}")
    return generation, tcb


def minimum_tcb_to_json(minimum: Mapping[Generation, TcbVersion]) -> dict[str, Any]:
    return {g.value: minimum[g].components() for g in Generation if g in minimum}


def minimum_tcb_from_json(obj: Any) -> dict[Generation, TcbVersion]:
    """Per-product minimums. Raises ``KeyError``/``TypeError``/``ValueError`` if malformed."""
    if not isinstance(obj, dict):
        raise TypeError("minimum_tcb must be an object")
    out: dict[Generation, TcbVersion] = {}
    for name, components in obj.items():
        generation = Generation(name)
        tcb = TcbVersion(**components)
        if tcb.layout is not generation.tcb_layout:
            raise ValueError(f"minimum TCB for {name} has the wrong layout")
        out[generation] = tcb
    return out


def check_minimum_tcb(
    minimum: Mapping[Generation, TcbVersion], generation: Generation | None, tcb: TcbVersion
) -> None:
    """Raise :class:`PolicyDenied` unless ``tcb`` meets the minimum of its product."""
    if not minimum:
        return
    if generation is None or generation not in minimum:
        named = "an unknown product" if generation is None else generation.value
        listed = ", ".join(g.value for g in minimum)
        raise PolicyDenied(f"no minimum TCB is configured for {named} (only for {listed})")
    if not tcb.meets(minimum[generation]):
        raise PolicyDenied(f"REPORTED_TCB ({tcb}) is below the {generation.value} minimum "
                           f"({minimum[generation]})")


@dataclass(frozen=True)
class ResourcePolicy:
    """Which attested workloads may read one resource (module docstring)."""

    measurements: frozenset[bytes]
    policy_mask: int = 0
    policy_value: int = 0
    minimum_tcb: Mapping[Generation, TcbVersion] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.measurements:
            raise ValueError("a resource policy names at least one measurement")
        if any(len(m) != 48 for m in self.measurements):
            raise ValueError("measurements are 48 bytes")
        if self.policy_mask & ~_ALL_BITS or self.policy_value & ~self.policy_mask:
            raise ValueError("policy bits outside the guest POLICY flags, or value outside mask")

    def check(self, attested: Attested) -> None:
        """Raise :class:`PolicyDenied` naming the first requirement ``attested`` misses."""
        if attested.measurement not in self.measurements:
            allowed = ", ".join(m.hex()[:16] + "..." for m in sorted(self.measurements)[:3])
            more = f", {len(self.measurements) - 3} more" if len(self.measurements) > 3 else ""
            raise PolicyDenied(f"measurement {attested.measurement.hex()[:16]}... may not read "
                               f"this resource (its policy admits {allowed}{more})")
        if attested.policy & self.policy_mask != self.policy_value:
            raise PolicyDenied(f"guest POLICY {attested.policy:#x} does not have "
                               f"{describe_bits(self.policy_mask, self.policy_value)}")
        check_minimum_tcb(self.minimum_tcb, attested.generation, attested.reported_tcb)

    def to_json(self) -> dict[str, Any]:
        return {
            "measurements": sorted(m.hex() for m in self.measurements),
            "policy_mask": self.policy_mask,
            "policy_value": self.policy_value,
            "minimum_tcb": minimum_tcb_to_json(self.minimum_tcb),
        }

    @classmethod
    def from_json(cls, obj: Any) -> ResourcePolicy:
        """Raises ``KeyError``/``TypeError``/``ValueError`` if malformed."""
        return cls(
            measurements=frozenset(bytes.fromhex(m) for m in obj["measurements"]),
            policy_mask=int(obj["policy_mask"]),
            policy_value=int(obj["policy_value"]),
            minimum_tcb=minimum_tcb_from_json(obj["minimum_tcb"]),
        )


def parse_policy_bits(specs: tuple[str, ...]) -> tuple[int, int]:
    """``NAME=0|1`` items (``debug=0``, ``single_socket=1``) as (mask, value)."""
    mask = value = 0
    for spec in specs:
        name, sep, bit = spec.partition("=")
        flag = POLICY_BITS.get(name.strip().lower())
        if not sep or flag is None or bit.strip() not in ("0", "1"):
            names = ", ".join(POLICY_BITS)
            raise ValueError(f"{spec!r} is not NAME=0|1 with NAME one of {names}")
        if mask & flag:
            raise ValueError(f"{name} is given twice")
        mask |= flag
        value |= flag if bit.strip() == "1" else 0
    return mask, value


def describe_bits(mask: int, value: int) -> str:
    parts = [f"{name}={int(bool(value & bit))}" for name, bit in POLICY_BITS.items()
             if mask & bit]
    return ",".join(parts) or "no constraint"
