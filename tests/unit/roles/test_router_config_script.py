"""The router unit's configuration helper (roles/router/files/router_config.py): drained workstations left out, a
drain that would empty a model refused, the loaded file written whole and private."""

import importlib.util
import json
import stat
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
SPEC = importlib.util.spec_from_file_location("router_config", REPO / "roles/router/files/router_config.py")
router_config = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(router_config)


def deployment(host, model):
    return {"model_name": model, "litellm_params": {"model": "hosted_vllm/" + model, "api_base": "http://%s/v1" % host},
            "model_info": {"id": host}}


CONFIG = {"model_list": [deployment("ws-a", "llama"), deployment("ws-b", "llama"), deployment("ws-c", "coder")],
          "general_settings": {"master_key": "k"}}


def test_drained_workstations_are_left_out_and_the_rest_kept_in_order():
    result = router_config.without_drained(CONFIG, ["ws-a"])
    assert [d["model_info"]["id"] for d in result["model_list"]] == ["ws-b", "ws-c"]
    assert result["general_settings"] == CONFIG["general_settings"]
    assert [d["model_info"]["id"] for d in CONFIG["model_list"]] == ["ws-a", "ws-b", "ws-c"]


def test_draining_the_last_host_of_a_model_is_refused():
    with pytest.raises(router_config.ConfigError, match="coder with no workstation"):
        router_config.without_drained(CONFIG, ["ws-c"])


def test_draining_a_name_the_router_does_not_know_is_refused():
    with pytest.raises(router_config.ConfigError, match="ws-z"):
        router_config.without_drained(CONFIG, ["ws-z"])


def test_apply_writes_the_effective_file_private_and_whole(tmp_path):
    base, drained, out = tmp_path / "upstreams.yaml", tmp_path / "drained.json", tmp_path / "config.yaml"
    base.write_text(yaml.safe_dump(CONFIG))
    router_config.apply(str(base), str(drained), str(out))
    assert len(yaml.safe_load(out.read_text())["model_list"]) == 3
    drained.write_text(json.dumps(["ws-b"]))
    router_config.apply(str(base), str(drained), str(out))
    assert [d["model_info"]["id"] for d in yaml.safe_load(out.read_text())["model_list"]] == ["ws-a", "ws-c"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".config-")] == []


def test_a_refused_drain_leaves_the_loaded_file_as_it_was(tmp_path):
    base, drained, out = tmp_path / "upstreams.yaml", tmp_path / "drained.json", tmp_path / "config.yaml"
    base.write_text(yaml.safe_dump(CONFIG))
    router_config.apply(str(base), str(drained), str(out))
    before = out.read_text()
    drained.write_text(json.dumps(["ws-a", "ws-b"]))
    with pytest.raises(router_config.ConfigError):
        router_config.apply(str(base), str(drained), str(out))
    assert out.read_text() == before


@pytest.mark.parametrize("content", ['{"ws-a": true}', '[1, 2]'])
def test_a_drained_file_that_is_not_a_list_of_names_is_refused(tmp_path, content):
    drained = tmp_path / "drained.json"
    drained.write_text(content)
    with pytest.raises(router_config.ConfigError, match="JSON list"):
        router_config.read_drained(str(drained))


def test_check_refuses_a_file_without_the_routers_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_list": CONFIG["model_list"], "general_settings": {}}))
    with pytest.raises(router_config.ConfigError, match="master_key"):
        router_config.check(str(path))


def test_drain_and_undrain_update_the_list_once_each_and_keep_the_directorys_group(tmp_path):
    drained = str(tmp_path / "drained.json")
    assert router_config.update_drained(drained, "ws-b", "drain") is True
    assert router_config.update_drained(drained, "ws-a", "drain") is True
    assert router_config.update_drained(drained, "ws-a", "drain") is False
    assert json.loads(Path(drained).read_text()) == ["ws-a", "ws-b"]
    assert Path(drained).stat().st_gid == tmp_path.stat().st_gid
    assert stat.S_IMODE(Path(drained).stat().st_mode) == 0o640
    assert router_config.update_drained(drained, "ws-b", "undrain") is True
    assert router_config.update_drained(drained, "ws-z", "undrain") is False
    assert json.loads(Path(drained).read_text()) == ["ws-a"]
