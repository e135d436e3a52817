"""scripts/release on a repository of its own (no LNbits needed): the archives LNbits'
installer accepts, the manifest listing them (with the companion extension when
companion/ exists), deterministic hashes, --ref, and releases kept across runs."""

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

from servers import REPO


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _repo(tmp_path: Path, companion: bool) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "release", repo / "scripts" / "release")
    config = json.loads((REPO / "config.json").read_text())
    (repo / "config.json").write_text(json.dumps(config))
    (repo / "__init__.py").write_text("VERSION = 1\n")
    (repo / "static" / "image").mkdir(parents=True)
    (repo / "static" / "image" / "satmachine.png").write_bytes(b"png")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text("")
    (repo / "README.md").write_text("# Sat Machine Admin\n")
    if companion:
        (repo / "companion").mkdir()
        (repo / "companion" / "config.json").write_text(
            json.dumps(
                {
                    "id": "satmachineclient",
                    "version": "0.1.0",
                    "name": "Sat Machine Client",
                    "short_description": "An LP's view",
                    "min_lnbits_version": "1.6.2",
                }
            )
        )
        (repo / "companion" / "__init__.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "release")
    return repo


def _release(repo: Path, out: Path, *extra: str) -> dict:
    subprocess.run(
        [
            str(repo / "scripts" / "release"),
            "--base-url",
            "http://h/r",
            "--out",
            str(out),
            *extra,
        ],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    return json.loads((out / "extensions.json").read_text())


def test_release_lists_both_extensions_with_their_hashes(tmp_path):
    repo = _repo(tmp_path, companion=True)
    out = tmp_path / "out"
    manifest = _release(repo, out)
    version = json.loads((REPO / "config.json").read_text())["version"]
    by_id = {e["id"]: e for e in manifest["extensions"]}
    assert set(by_id) == {"satmachineadmin", "satmachineclient"}
    for ext_id, entry in by_id.items():
        archive = out / Path(entry["archive"]).name
        assert entry["hash"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert entry["min_lnbits_version"] == "1.6.2"
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
        # One top-level folder holding config.json, as LNbits' installer unpacks it.
        assert {n.split("/")[0] for n in names} == {ext_id}
        assert f"{ext_id}/config.json" in names
    admin = zipfile.ZipFile(out / f"satmachineadmin-{version}.zip").namelist()
    assert "satmachineadmin/__init__.py" in admin
    assert not any("tests/" in n or "companion" in n or "scripts/" in n for n in admin)
    assert by_id["satmachineadmin"]["icon"] == "http://h/r/satmachineadmin.png"
    details = json.loads((out / f"satmachineadmin-{version}.json").read_text())
    assert details["description_md"] == f"http://h/r/satmachineadmin-{version}.md"

    # Deterministic: the same files, the same hash.
    again = _release(repo, tmp_path / "again")
    assert {e["hash"] for e in again["extensions"]} == {
        e["hash"] for e in manifest["extensions"]
    }


def test_release_from_a_ref_and_older_releases_kept(tmp_path):
    repo = _repo(tmp_path, companion=False)
    out = tmp_path / "out"
    first = _release(repo, out)["extensions"][0]
    config = json.loads((repo / "config.json").read_text())
    config["version"] = "9.9.9"
    (repo / "config.json").write_text(json.dumps(config))
    (repo / "__init__.py").write_text("VERSION = 2\n")

    # --ref: the commit, not the working tree.
    from_ref = _release(repo, tmp_path / "ref", "--ref", "HEAD")["extensions"]
    assert [e["hash"] for e in from_ref] == [first["hash"]]

    manifest = _release(repo, out)
    assert [e["version"] for e in manifest["extensions"]] == [
        first["version"],
        "9.9.9",
    ]
    with zipfile.ZipFile(out / "satmachineadmin-9.9.9.zip") as z:
        assert z.read("satmachineadmin/__init__.py") == b"VERSION = 2\n"
