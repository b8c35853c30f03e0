"""The docs that are generated or runnable: the configuration reference and the Python API example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from rumor.config import iter_keys, parse_duration
from rumor.ops.configdoc import render, render_orderer

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_up_to_date() -> None:
    page = ROOT / "docs" / "configuration.md"
    assert page.is_file(), "docs/configuration.md is missing: run `make docs`"
    assert page.read_text() == render(), "docs/configuration.md is stale: run `make docs` and commit the result"


def test_orderer_configuration_reference_is_up_to_date() -> None:
    page = ROOT / "docs" / "orderer-configuration.md"
    assert page.is_file(), "docs/orderer-configuration.md is missing: run `make docs`"
    assert page.read_text() == render_orderer(), "docs/orderer-configuration.md is stale: run `make docs`"


def test_configuration_reference_lists_every_key_with_default_and_doc() -> None:
    page = render()
    for key in iter_keys():
        line = next((ln for ln in page.splitlines() if ln.startswith(f"| `{key.path}` |")), None)
        assert line is not None, key.path
        assert key.env in line and key.doc.split("|")[0][:30] in line


def test_python_api_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embedded_peers.py"), "--blocks", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bob received block 3" in result.stdout
    assert result.stdout.strip().endswith("done")
    # The example logs at WARNING and above: a clean run, a clean stop included, logs nothing at all.
    # (It once ended with "WARNING rumor.comm: ... broken: stream cancelled" from the peers' own clean stop.)
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))]
    assert problems == [], output
    # Members are typed: the peer's name (its certificate's common name) and org as text, not raw bytes.
    assert "alice knows peer1.org1.example.com at 127.0.0.1:" in result.stdout
    assert "(Org1MSP, pki id " in result.stdout and "b'Org1MSP'" not in result.stdout


def test_readme_has_the_quickstart_and_links_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "rumor network up" in readme
    for linked in ("docs/configuration.md", "docs/multi-host.md", "docs/api.md", "examples/embedded_peers.py"):
        assert linked in readme, linked
        assert (ROOT / linked).exists(), linked


def test_multi_host_genesis_recipes_run(tmp_path: Path) -> None:
    """The channel-creation recipes of docs/multi-host.md (the shell one and the Python one) work as written."""
    page = (ROOT / "docs" / "multi-host.md").read_text()
    rumor = str(Path(sys.executable).parent / "rumor")
    done = subprocess.run(
        [rumor, "crypto", "generate", "--orgs", "2", "--peers-per-org", "2", "--out", "crypto"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shell = page.split("```sh\nrumor channel create", 1)[1].split("```", 1)[0]
    args = ["channel", "create", *shell.replace("\\\n", " ").split()]
    done = subprocess.run([rumor, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    python = next(block.split("```", 1)[0] for block in page.split("```python\n")[1:] if "cc.channel_config" in block)
    (tmp_path / "mychannel.block").unlink()
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    from rumor import channelconfig as cc

    config = cc.read_genesis((tmp_path / "mychannel.block").read_bytes())
    assert config.anchor_peers == {
        "Org1MSP": ["peer0.org1.example.com:7051"],
        "Org2MSP": ["peer0.org2.example.com:7051"],
    }
    assert config.orderer_endpoints == ["orderer.example.com:7050"] and config.batch.batch_timeout == 0.5


# --------------------------------------------------------------------------------------------------
# Pages that must be self-contained: every link and every ../ path they name lies inside the repository.

SELF_CONTAINED = ("README.md", "docs/*.md", "bench/results/README.md")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
PARENT_PATH = re.compile(r"(?<![\w./])(?:\.\./)+[\w.\-/]*")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE)}


def outside_links(page: Path, root: Path = ROOT) -> list[str]:
    """What ``page`` links or names that is not in the repository: one line per problem."""
    text = page.read_text()
    prose = FENCE.sub("", text)
    name = page.relative_to(root)
    problems: list[str] = []
    if "../shared" in text:
        problems.append(f"{name}: names ../shared, which a clone does not have")
    for match in LINK.finditer(prose):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{name}: absolute link {target}")
            continue
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{name}: link {target} leads outside the repository")
        elif not resolved.exists():
            problems.append(f"{name}: link {target}: no such file in the repository")
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
            problems.append(f"{name}: link {target}: {resolved.name} has no heading #{fragment}")
    for match in PARENT_PATH.finditer(text):
        resolved = (page.parent / match.group(0)).resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            problems.append(f"{name}: names {match.group(0)}, which is not in the repository")
    return problems


def test_docs_link_only_inside_the_repository() -> None:
    pages = sorted({p for pattern in SELF_CONTAINED for p in ROOT.glob(pattern)})
    assert ROOT / "docs" / "architecture.md" in pages and ROOT / "docs" / "protocol.md" in pages
    problems = [problem for page in pages for problem in outside_links(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_outside_and_missing_targets(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# There\n\n## A section\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/there.md#a-section) [web](https://example.org/x) [self](#top)\n\n# Top\n\n"
        "[design](../shared/DESIGN.md) and `../shared/protocol.md`\n"
        "[gone](docs/missing.md) [up](../elsewhere.md) [abs](/etc/passwd) [anchor](docs/there.md#nowhere)\n"
    )
    problems = outside_links(page, tmp_path)
    assert any("names ../shared" in p for p in problems)
    assert any("../shared/DESIGN.md leads outside" in p for p in problems)
    assert any("docs/missing.md: no such file" in p for p in problems)
    assert any("../elsewhere.md leads outside" in p for p in problems)
    assert any("absolute link /etc/passwd" in p for p in problems)
    assert any("has no heading #nowhere" in p for p in problems)
    assert not any("there.md#a-section" in p or "example.org" in p or "#top" in p for p in problems)


def test_protocol_page_defaults_are_the_schema_defaults() -> None:
    """The "rumor" column of docs/protocol.md's defaults table is what src/rumor/config.py says, for every key."""
    page = (ROOT / "docs" / "protocol.md").read_text()
    section = page.split("\n## Defaults\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]+) \| ([^|]+) \|", section, re.MULTILINE)
    stated = {f"peer.gossip.{key}": rumor.strip() for key, _fabric, rumor in rows}
    keys = {k.path: k for k in iter_keys() if k.path.startswith("peer.gossip.")}
    missing, unknown = sorted(set(keys) - set(stated)), sorted(set(stated) - set(keys))
    assert not missing and not unknown, f"missing: {missing}; unknown: {unknown}"
    for path, value in stated.items():
        key = keys[path]
        if value == "(empty)":
            assert key.default in ("", ()), path
        elif key.kind == "duration":
            assert parse_duration(value) == key.default, path
        else:
            assert value == key.default_text, path
