"""Crypto material shared by the crypto tests: generated once per session, treated as read-only."""

from __future__ import annotations

import pytest

from rumor.crypto import GeneratedMaterial, OrgRegistry, default_spec, generate, load_org


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> GeneratedMaterial:
    return generate(default_spec(2, 3), tmp_path_factory.mktemp("material") / "crypto-config")


@pytest.fixture
def registry(material: GeneratedMaterial) -> OrgRegistry:
    """A fresh registry per test, so tests that add CRLs or move the clock do not leak into others."""
    return OrgRegistry([load_org(o.msp_dir, o.mspid) for o in material.orgs])
