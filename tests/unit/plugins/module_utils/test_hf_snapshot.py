"""hf_snapshot's pieces that need no hub: free space, refs, pattern rules, hashes, error messages."""

import hashlib

import pytest

from ansible_collections.llmfleet.workstation.plugins.module_utils import hf_snapshot

huggingface_hub = pytest.importorskip("huggingface_hub")


def test_free_space_is_read_from_the_nearest_existing_directory(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(hf_snapshot.shutil, "disk_usage", lambda path: seen.append(path) or type(
        "Usage", (), {"free": 7 * hf_snapshot.GB})())
    assert hf_snapshot.free_bytes(str(tmp_path / "not" / "yet" / "there")) == 7 * hf_snapshot.GB
    assert seen == [str(tmp_path)]


def test_free_space_check_names_sizes_path_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_snapshot, "free_bytes", lambda path: 40 * hf_snapshot.GB)
    hf_snapshot.check_free_space(38 * hf_snapshot.GB, str(tmp_path), 2.0, "x")  # exactly fits
    with pytest.raises(hf_snapshot.HfModelError) as error:
        hf_snapshot.check_free_space(39 * hf_snapshot.GB, str(tmp_path), 2.0, "acme/big at commit abc")
    message = str(error.value)
    assert "acme/big at commit abc: it needs 41.00 GB (39.00 GB to download + 2.00 GB margin)" in message
    assert "%s has 40.00 GB free" % tmp_path in message
    assert "model_cache_dir" in message
    hf_snapshot.check_free_space(0, str(tmp_path), 100.0, "nothing to fetch never fails")


def test_refs_are_written_once_and_atomically(tmp_path):
    cache = str(tmp_path)
    assert hf_snapshot.write_ref(cache, "acme/m", "main", "a" * 40) is True
    assert hf_snapshot.write_ref(cache, "acme/m", "main", "a" * 40) is False
    assert hf_snapshot.read_ref(cache, "acme/m", "main") == "a" * 40
    assert hf_snapshot.write_ref(cache, "acme/m", "b" * 40, "b" * 40) is False  # a sha needs no ref
    assert sorted(p.name for p in (tmp_path / "models--acme--m" / "refs").iterdir()) == ["main"]


@pytest.mark.parametrize("allow, ignore", [
    (None, None), (["*.json"], None), (None, ["*.md"]), (["sub/"], None), (["*.json", "sub/*"], ["sub/b*"]),
    (["*"], [".*"]),
])
def test_offline_patterns_match_huggingface_hub(allow, ignore):
    paths = ["config.json", "README.md", "sub/a.json", "sub/b.bin", ".gitattributes", "model.safetensors"]
    expected = list(huggingface_hub.utils.filter_repo_objects(paths, allow_patterns=allow, ignore_patterns=ignore))
    assert [p for p in paths if hf_snapshot.offline_pattern_match(p, allow, ignore)] == expected


def test_content_checks_use_sha256_for_lfs_and_the_git_blob_id_otherwise(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert hf_snapshot.file_git_blob_id(str(path)) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    sha256 = hashlib.sha256(b"hello\n").hexdigest()
    assert hf_snapshot.content_matches(hf_snapshot.RemoteFile("f", 6, "x", sha256), str(path))
    assert not hf_snapshot.content_matches(hf_snapshot.RemoteFile("f", 6, "x", "0" * 64), str(path))
    assert hf_snapshot.content_matches(hf_snapshot.RemoteFile("f", 6, "ce013625030ba8dba906f756967f9e9ca394464a"),
                                       str(path))
    assert hf_snapshot.needs_fetch(hf_snapshot.RemoteFile("f", 7, "x"), str(path), False) == \
        "has 6 bytes, the hub says 7"
    assert hf_snapshot.needs_fetch(hf_snapshot.RemoteFile("g", 6, "x"), str(tmp_path / "g"), False) == "missing"


def test_commit_hash_must_be_a_sha_offline(tmp_path):
    with pytest.raises(hf_snapshot.HfModelError, match="40 hex digits"):
        hf_snapshot.verify_offline("acme/m", "main", str(tmp_path), commit_hash="main", manifest=[],
                                   verify_checksums=False)
