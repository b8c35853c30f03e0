"""The docs that are generated or runnable: the configuration reference and the Python API example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rumor.config import iter_keys
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
