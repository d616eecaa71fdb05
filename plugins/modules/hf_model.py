#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: hf_model
short_description: Download or verify a Hugging Face model snapshot in a shared cache
version_added: 0.1.0
description:
  - Brings the files of one Hugging Face Hub repository at one revision into a Hugging Face cache directory, in the
    standard layout that C(huggingface_hub), C(transformers) and vLLM read
    (C(CACHE_DIR/models--ORG--NAME/blobs), C(snapshots/COMMIT), C(refs)).
  - Online, it resolves the revision to a commit, lists the repository's files, keeps those that match
    O(allow_patterns) and O(ignore_patterns), and compares them with the cache by size (and by checksum with
    O(verify_checksums)). It fails B(before) downloading when the bytes still to fetch plus
    O(free_space_margin_gb) do not fit on the filesystem of O(cache_dir), then fetches only what is missing or
    damaged with C(huggingface_hub.snapshot_download). Every file fetched is checked against the hub's checksum
    (sha256 for LFS files, the git blob id for the others).
  - Offline (O(offline=true)), it checks the snapshot against a O(manifest) (the RV(files) an earlier online run
    returned) and O(commit_hash) without any network access and without C(huggingface_hub).
  - Reports C(changed) only when files were fetched (or linked from blobs already in the cache) or a branch's ref
    moved; a second run on a complete snapshot downloads nothing.
options:
  repo_id:
    description:
      - Repository on the hub, C(ORG/NAME), for example C(casperhansen/llama-3.3-70b-instruct-awq).
    type: str
    required: true
  revision:
    description:
      - Commit sha (40 hex digits), branch or tag.
      - A commit sha pins the snapshot, so every run and every host get the same weights. A branch such as
        C(main) moves when the repository is updated upstream, and a later run then downloads a new snapshot.
      - For a branch or tag, C(refs/REVISION) in the cache is pointed at the commit, so loaders that ask for the
        branch offline find it.
    type: str
    required: true
  cache_dir:
    description:
      - Hugging Face cache directory (what C(HF_HUB_CACHE) names for the engine). Created when missing.
    type: path
    required: true
  allow_patterns:
    description:
      - Download only files whose path in the repository matches one of these glob patterns (as
        C(huggingface_hub) matches them; C(dir/) means everything under C(dir)).
      - Unset fetches every file.
    type: list
    elements: str
  ignore_patterns:
    description:
      - Skip files whose path matches one of these glob patterns.
    type: list
    elements: str
  token:
    description:
      - Hugging Face access token, for private and gated repositories.
      - Unset uses C(HF_TOKEN) or the token saved by C(hf auth login) in the environment of the task, if any.
    type: str
  endpoint:
    description:
      - Base URL of the hub or of a mirror.
      - Unset uses C(huggingface_hub)'s default, C(https://huggingface.co), or C(HF_ENDPOINT) from the environment
        of the task.
    type: str
  offline:
    description:
      - Verify the local snapshot against O(manifest) and O(commit_hash) without any network access.
      - Needs neither C(huggingface_hub) nor the hub; fails naming every file that is missing, has the wrong size,
        or (with O(verify_checksums)) the wrong sha256.
      - For a O(revision) that is not a commit sha, C(refs/REVISION) must point at O(commit_hash).
    type: bool
    default: false
  manifest:
    description:
      - The files the snapshot must hold, each with C(path), C(size) and C(sha256), exactly the RV(files) list an
        online run returns. Used with O(offline=true).
      - With O(allow_patterns) or O(ignore_patterns) set, only the matching entries are checked.
    type: list
    elements: dict
  commit_hash:
    description:
      - Commit sha the snapshot must be at. Required with O(offline=true) (use RV(commit_hash) of an online run).
    type: str
  verify_checksums:
    description:
      - Hash every file and compare it with the hub's checksum (online) or the manifest's sha256 (offline), not
        only its size. Online, a damaged file is fetched again.
      - Slow on large models (a 40 GB snapshot takes minutes). Files fetched in this run are always checked.
    type: bool
    default: false
  free_space_margin_gb:
    description:
      - Free space, in GB (10^9 bytes), that must remain on the filesystem of O(cache_dir) after the download.
    type: float
    default: 2
  timeout:
    description:
      - Seconds to wait for the hub to answer a request or to send the next part of a file.
      - Unset uses C(huggingface_hub)'s defaults (C(HF_HUB_ETAG_TIMEOUT), C(HF_HUB_DOWNLOAD_TIMEOUT), 10 s).
    type: int
notes:
  - A download interrupted by the network is resumed within the run with an HTTP C(Range) request from the last
    complete chunk (10 MiB) C(huggingface_hub) wrote. A run that is killed leaves no usable partial file
    (C(huggingface_hub) 2.x writes each download to a file unique to its process and removes it on failure), so
    the next run fetches that file from its start; files completed before are kept.
  - The free-space check counts only the files still to fetch, by the sizes the hub reports.
  - Check mode lists the files a run would fetch (RV(would_fetch)) and writes nothing, not even C(refs) or
    C(huggingface_hub)'s tree cache; it still asks the hub for the file list.
requirements:
  - huggingface_hub 2.x on the host that runs the task, except with O(offline=true)
attributes:
  check_mode:
    support: full
    description: Asks the hub, compares with the cache and reports RV(would_fetch) and C(changed); writes nothing.
  diff_mode:
    support: none
    description: The result lists the files fetched instead.
seealso:
  - name: Hugging Face cache layout
    description: How the hub cache stores blobs, snapshots and refs.
    link: https://huggingface.co/docs/huggingface_hub/guides/manage-cache
author:
  - llmfleet.workstation contributors (@llmfleet)
"""

EXAMPLES = r"""
- name: Pull the weights at a pinned commit into the controller's cache
  llmfleet.workstation.hf_model:
    repo_id: casperhansen/llama-3.3-70b-instruct-awq
    revision: 8f3c9a1e2d4b5c6a7f8e9d0c1b2a3f4e5d6c7b8a
    cache_dir: /var/lib/llmfleet/models
    allow_patterns: ["*.json", "*.safetensors", "tokenizer*"]
    token: "{{ model_hf_token }}"
  delegate_to: localhost
  run_once: true
  register: model_pull

- name: Verify a workstation's copy without the network
  llmfleet.workstation.hf_model:
    repo_id: casperhansen/llama-3.3-70b-instruct-awq
    revision: 8f3c9a1e2d4b5c6a7f8e9d0c1b2a3f4e5d6c7b8a
    cache_dir: /var/lib/llmfleet/models
    offline: true
    commit_hash: "{{ model_pull.commit_hash }}"
    manifest: "{{ model_pull.files }}"
    verify_checksums: true

- name: Use a mirror and keep 50 GB free
  llmfleet.workstation.hf_model:
    repo_id: Qwen/Qwen2.5-Coder-32B-Instruct-AWQ
    revision: main
    cache_dir: /srv/models
    endpoint: https://hf-mirror.internal.example
    free_space_margin_gb: 50
    timeout: 60
"""

RETURN = r"""
commit_hash:
  description: Commit the revision resolved to (offline, the O(commit_hash) checked).
  returned: success
  type: str
  sample: 8f3c9a1e2d4b5c6a7f8e9d0c1b2a3f4e5d6c7b8a
snapshot_path:
  description: Directory of the snapshot, the path to give vLLM (C(vllm serve PATH)).
  returned: success
  type: str
  sample: >-
    /var/lib/llmfleet/models/models--casperhansen--llama-3.3-70b-instruct-awq/snapshots/8f3c9a1e2d4b5c6a7f8e9d0c1b2a3f4e5d6c7b8a
files:
  description:
    - Every file of the snapshot after the patterns, in the form O(manifest) takes.
    - C(sha256) is the hub's for LFS files and computed on this host for the others; in check mode it is null for a
      file that is not LFS and not on disk yet.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Path in the repository.
      type: str
      sample: model-00001-of-00009.safetensors
    size:
      description: Size in bytes.
      type: int
      sample: 4987654321
    sha256:
      description: SHA-256 of the content, hex.
      type: str
      sample: d5fbe35bb69c6f9e217e6bcc96fdd63148c49343c7e2cc7e3d2d21eafad679a6
bytes_total:
  description: Sum of the sizes in RV(files).
  returned: success
  type: int
  sample: 39876543210
fetched:
  description: Paths downloaded in this run (empty in check mode and offline).
  returned: success
  type: list
  elements: str
  sample: [config.json, model-00001-of-00009.safetensors]
bytes_fetched:
  description: Bytes of the files in RV(fetched).
  returned: success
  type: int
  sample: 4987655001
would_fetch:
  description: In check mode, the paths a run would fetch (missing or damaged); empty otherwise.
  returned: success
  type: list
  elements: str
  sample: [config.json, model-00001-of-00009.safetensors]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmfleet.workstation.plugins.module_utils.hf_snapshot import (
    HAS_HUGGINGFACE_HUB,
    HUGGINGFACE_HUB_IMPORT_ERROR,
    HfModelError,
    run,
)

ARGUMENT_SPEC = {
    "repo_id": {"type": "str", "required": True},
    "revision": {"type": "str", "required": True},
    "cache_dir": {"type": "path", "required": True},
    "allow_patterns": {"type": "list", "elements": "str"},
    "ignore_patterns": {"type": "list", "elements": "str"},
    "token": {"type": "str", "no_log": True},
    "endpoint": {"type": "str"},
    "offline": {"type": "bool", "default": False},
    "manifest": {"type": "list", "elements": "dict"},
    "commit_hash": {"type": "str"},
    "verify_checksums": {"type": "bool", "default": False},
    "free_space_margin_gb": {"type": "float", "default": 2},
    "timeout": {"type": "int"},
}


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("offline", True, ("commit_hash", "manifest"))],
        supports_check_mode=True,
    )
    if not module.params["offline"] and not HAS_HUGGINGFACE_HUB:
        module.fail_json(msg=missing_required_lib("huggingface_hub"), exception=HUGGINGFACE_HUB_IMPORT_ERROR)
    try:
        result = run(module.params, module.check_mode)
    except HfModelError as error:
        module.fail_json(msg=str(error), changed=False)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
