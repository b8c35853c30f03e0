"""The identity mapper: validated puts, usage and expiry purges, revalidation, sign/verify.

Mirrors Fabric's gossip/identity/identity_test.go (TestPut, TestGet, TestVerify, TestSign, TestExpiration,
TestIdentitiesUsage / the usage-threshold purge, SuspectPeers' revalidation).
"""

from __future__ import annotations

import pytest

from rumor.core.identity import USAGE_THRESHOLD, IdentityError, IdentityMapper
from rumor.crypto.api import InvalidSignature
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reg(clock: Clock) -> CheapRegistry:
    return CheapRegistry(now=clock)


def mapper_for(reg: CheapRegistry, name: str = "me", **kwargs: float) -> tuple[IdentityMapper, CheapCryptoService]:
    mcs = CheapCryptoService.for_peer("Org1MSP", name, reg)
    return IdentityMapper(mcs, mcs.identity, **kwargs), mcs


def test_put_and_get(reg: CheapRegistry) -> None:
    mapper, mcs = mapper_for(reg)
    other = CheapCryptoService.for_peer("Org2MSP", "p1", reg)
    assert mapper.get(mcs.pki_id, 0.0) == mcs.identity
    assert mapper.get(other.pki_id, 0.0) is None
    mapper.put(other.pki_id, other.identity, 1.0)
    assert other.pki_id in mapper
    assert mapper.get(other.pki_id, 2.0) == other.identity
    mapper.put(other.pki_id, other.identity, 3.0)  # again: accepted, nothing changes
    assert len(mapper) == 2


def test_put_refuses_mismatch_invalid_expired_and_empty(reg: CheapRegistry, clock: Clock) -> None:
    mapper, _ = mapper_for(reg)
    a = CheapCryptoService.for_peer("Org1MSP", "a", reg)
    b = CheapCryptoService.for_peer("Org1MSP", "b", reg)
    with pytest.raises(IdentityError, match="does not match") as err:
        mapper.put(a.pki_id, b.identity, 0.0)
    assert err.value.reason == "mismatch"

    stranger = reg.identity_of("Org1MSP", "never-enrolled")
    with pytest.raises(IdentityError, match="invalid identity") as err:
        mapper.put(mapper.pki_id_of(stranger), stranger, 0.0)
    assert err.value.reason == "invalid"

    reg.set_expiration(b.identity, 5.0)
    clock.t = 6.0
    with pytest.raises(IdentityError):
        mapper.put(b.pki_id, b.identity, 6.0)

    with pytest.raises(IdentityError, match="empty"):
        mapper.put(a.pki_id, b"", 0.0)
    with pytest.raises(IdentityError, match="empty"):
        mapper.put(b"", a.identity, 0.0)
    assert a.pki_id not in mapper and b.pki_id not in mapper


def test_expired_by_mapper_clock_even_if_validation_passes(reg: CheapRegistry) -> None:
    # The registry has no clock here: only the mapper's own expiry check can refuse it.
    reg.now = None
    mapper, _ = mapper_for(reg)
    a = CheapCryptoService.for_peer("Org1MSP", "a", reg)
    reg.set_expiration(a.identity, 100.0)
    with pytest.raises(IdentityError, match="expired") as err:
        mapper.put(a.pki_id, a.identity, 100.0)
    assert err.value.reason == "expired"
    # clock_offset maps the shell's clock onto the certificate's (Unix) clock.
    shifted, _ = mapper_for(reg, clock_offset=1000.0)
    with pytest.raises(IdentityError, match="expired"):
        shifted.put(a.pki_id, a.identity, 0.0)


def test_purged_at_expiry_and_listener_told(reg: CheapRegistry) -> None:
    mapper, _ = mapper_for(reg)
    a = CheapCryptoService.for_peer("Org1MSP", "a", reg)
    reg.set_expiration(a.identity, 50.0)
    heard: list[tuple[bytes, str, float]] = []
    mapper.subscribe(lambda pki, _identity, reason, now: heard.append((pki, reason, now)))
    mapper.put(a.pki_id, a.identity, 10.0)
    assert mapper.next_deadline() == 50.0
    assert mapper.on_tick(49.0) == []
    assert mapper.on_tick(50.0) == [a.pki_id]
    assert a.pki_id not in mapper
    assert heard == [(a.pki_id, "expired", 50.0)]


def test_unused_identities_purged_after_an_hour_but_not_self(reg: CheapRegistry) -> None:
    mapper, mcs = mapper_for(reg)
    a = CheapCryptoService.for_peer("Org1MSP", "a", reg)
    b = CheapCryptoService.for_peer("Org1MSP", "b", reg)
    mapper.put(a.pki_id, a.identity, 0.0)
    mapper.put(b.pki_id, b.identity, 0.0)
    check = USAGE_THRESHOLD / 10
    assert mapper.next_deadline() == check
    t = 0.0
    purged: list[bytes] = []
    while t < USAGE_THRESHOLD + 2 * check:
        t += check
        mapper.get(b.pki_id, t)  # b is in use, a is not
        purged += mapper.on_tick(t)
    assert purged == [a.pki_id]
    assert b.pki_id in mapper and mcs.pki_id in mapper


def test_revalidate_removes_revoked(reg: CheapRegistry) -> None:
    mapper, mcs = mapper_for(reg)
    a = CheapCryptoService.for_peer("Org1MSP", "a", reg)
    b = CheapCryptoService.for_peer("Org1MSP", "b", reg)
    mapper.put(a.pki_id, a.identity, 0.0)
    mapper.put(b.pki_id, b.identity, 0.0)
    assert mapper.revalidate(1.0) == []
    reg.revoke(a.identity)
    assert mapper.revalidate(2.0) == [a.pki_id]
    assert a.pki_id not in mapper and b.pki_id in mapper
    reg.revoke(mcs.identity)
    assert mapper.revalidate(3.0, suspect=lambda identity: identity != b.identity) == []  # never self


def test_sign_and_verify(reg: CheapRegistry) -> None:
    mapper, mcs = mapper_for(reg)
    a = CheapCryptoService.for_peer("Org1MSP", "a", reg)
    other_mapper = IdentityMapper(a, a.identity)
    other_mapper.put(mcs.pki_id, mcs.identity, 0.0)
    sig = mapper.sign(b"hello")
    other_mapper.verify(mcs.pki_id, sig, b"hello", 0.0)
    with pytest.raises(InvalidSignature):
        other_mapper.verify(mcs.pki_id, sig, b"hellO", 0.0)
    with pytest.raises(IdentityError, match="no identity known"):
        mapper.verify(a.pki_id, a.sign(b"x"), b"x", 0.0)
