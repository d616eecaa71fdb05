# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Versions that go together: vLLM releases, the CUDA their default wheels ship, the NVIDIA driver branches
that run them, and the branches each GPU family needs.

The one place these facts live. Data first (each row with its source), then small pure functions that judge a
host: ``engine_verdict`` (a vllm_version against the loaded driver and the GPUs NVML names) for the vllm role and
preflight.yml, ``branch_verdict`` (an nvidia_driver_branch against the GPUs on the PCI bus) for the nvidia_driver
role, and ``pci_family`` for the module that reads the PCI bus before any driver exists.

Python, not a YAML data file, because both sides need it: the filters on the controller and a module on the
target (module_utils travel with the module; a data file in the collection would not), and a table of ranges
and regular expressions reads and tests better as code than as strings in YAML.

Why the table asks for the driver branch that ships with a wheel's CUDA toolkit, not the lowest branch NVIDIA's
minor-version compatibility allows: CUDA 12.x applications start on driver 525 and CUDA 13.x on 580
(https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html, Table 1), but "with limited
feature-set": PTX that needs the newer JIT fails at the first kernel that uses it, after the 3 GB download and
the model load. vLLM's own kernels do exactly that (vllm-project/vllm#31700: "the provided PTX was compiled with
an unsupported toolchain" in FlashAttention on vLLM 0.11.2; #28305 documents the error), so the safe branch is
the toolkit's own. Where a row was not confirmed it says so, and the higher branch is chosen.

Nothing here imports Ansible; Python 3.8 compatible (module_utils run on targets).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

# ---- CUDA toolkit -> driver branch ---------------------------------------------------------------------------

# The driver branch each CUDA toolkit release ships with, from the CUDA Toolkit Release Notes, table "CUDA
# Toolkit and Corresponding Driver Versions" (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/): 12.4 GA
# 550.54.14, 12.6 GA 560.28.03, 12.8 GA 570.26, 12.9 GA 575.51.03, 13.0 GA 580.65.06.
CUDA_DRIVER_BRANCH = {
    "12.4": 550,
    "12.6": 560,
    "12.8": 570,
    "12.9": 575,
    "13.0": 580,
}
# Lowest branch of a CUDA major version under minor-version compatibility (same NVIDIA page, Table 1): below it
# torch sees no GPU at all. Used only to say how badly a driver misses.
CUDA_MAJOR_FLOOR = {12: 525, 13: 580}

# ---- vLLM releases -------------------------------------------------------------------------------------------

# One row per change of the default wheel's torch or CUDA; a row holds from `since` up to the next row.
#   torch:      the exact torch the release pins (`torch==X` in the wheel's Requires-Dist, read from PyPI's
#               metadata of each x.y.0 release, 0.8.0 .. 0.33.0, and of 0.8.5, 0.9.2, 0.10.1, 0.10.2, 0.11.1 and
#               0.11.2, on 2026-12-02).
#   torch_cuda: the CUDA of that torch's default PyPI wheel: its nvidia-cuda-runtime-cu12 pin (2.6 .. 2.10) or
#               cuda-toolkit==13.0.x pin (2.11, 2.12, 2.14), same metadata. torch 2.13's was not read (the index
#               here resolves it to a local +cpu wheel); vLLM 0.27+ require cu13 packages, so 13.0 is taken.
#   cuda:       the CUDA the default vLLM wheel was built with; the venv needs the newer of the two.
#   confirmed:  False where the vLLM build's CUDA is inferred, not read from a source; the higher CUDA is assumed.
VLLM_RELEASES = (
    # vllm-project/vllm#12098 (2025-01-15): "Use CUDA 12.4 as default for release and nightly wheels".
    {"since": "0.8.0", "torch": "2.6.0", "torch_cuda": "12.4", "cuda": "12.4", "confirmed": True},
    # vllm-project/vllm#16859 / #17224 (2025-04-30): release wheels move to CUDA 12.8, "where Blackwell support
    # is added"; torch 2.7's PyPI default is still 12.6.
    {"since": "0.9.0", "torch": "2.7.0", "torch_cuda": "12.6", "cuda": "12.8", "confirmed": True},
    {"since": "0.10.0", "torch": "2.7.1", "torch_cuda": "12.6", "cuda": "12.8", "confirmed": True},
    # 0.11.0 (October 2025): torch 2.8 with CUDA 12.8, as the PyPI metadata and the release say.
    {"since": "0.10.2", "torch": "2.8.0", "torch_cuda": "12.8", "cuda": "12.8", "confirmed": True},
    # vllm-project/vllm#34867 (2026-02-19): "vLLM wheels have been built on CUDA 12.9" while torch's PyPI wheel
    # is 12.8 (said of 0.16.0). That the switch came with torch 2.9 in 0.11.1 is not confirmed: 12.9 is assumed.
    {"since": "0.11.1", "torch": "2.9.0", "torch_cuda": "12.8", "cuda": "12.9", "confirmed": False},
    {"since": "0.14.0", "torch": "2.9.1", "torch_cuda": "12.8", "cuda": "12.9", "confirmed": True},
    # torch 2.10 (CUDA 12.8 on PyPI): vLLM published cu129 and cu130 builds (vllm-project/vllm#42756,
    # 2026-05-15: "only cu129 and cu130 wheels"). Which one PyPI carried is not confirmed; a CUDA 13 build could
    # not load beside torch's CUDA 12 libraries, so 12.9 is assumed.
    {"since": "0.17.0", "torch": "2.10.0", "torch_cuda": "12.8", "cuda": "12.9", "confirmed": False},
    # CUDA 13 by default: torch 2.11's PyPI wheel requires cuda-toolkit==13.0.2 (its metadata), a plain install of
    # 0.20.0 imports cu13 libraries (discuss.vllm.ai/t/2601), 0.22.0+
    # require nvidia-cutlass-dsl[cu13] (PyPI metadata; vllm-project/vllm#44335: "links libcudart.so.13").
    # 0.26.0 checked on an H200: its extensions link libcudart.so.13 and it served on driver 580.159.04
    # (2026-12-01, docs/hardware.md). The last release that pins torch 2.11.
    {"since": "0.20.0", "torch": "2.11.0", "torch_cuda": "13.0", "cuda": "13.0", "confirmed": True},
    {"since": "0.27.0", "torch": "2.13.0", "torch_cuda": "13.0", "cuda": "13.0", "confirmed": True},
    {"since": "0.33.0", "torch": "2.14.0", "torch_cuda": "13.0", "cuda": "13.0", "confirmed": True},
)
# The newest release of each line on PyPI (pip index versions vllm, 2026-12-02), offered as "versions that would
# work"; a line missing here is offered as <line>.0.
VLLM_NEWEST_IN_LINE = {
    "0.8": "0.8.5.post1", "0.9": "0.9.2", "0.10": "0.10.2", "0.11": "0.11.2", "0.12": "0.12.0", "0.13": "0.13.0",
    "0.14": "0.14.1", "0.15": "0.15.1", "0.16": "0.16.0", "0.17": "0.17.1", "0.18": "0.18.1", "0.19": "0.19.1",
    "0.20": "0.20.2", "0.21": "0.21.0", "0.22": "0.22.1", "0.23": "0.23.0", "0.24": "0.24.0", "0.25": "0.25.1",
    "0.26": "0.26.0", "0.27": "0.27.1", "0.28": "0.28.0", "0.29": "0.29.0", "0.30": "0.30.0", "0.31": "0.31.0",
    "0.32": "0.32.0", "0.33": "0.33.0",
}

# ---- GPU families --------------------------------------------------------------------------------------------

# min_branch: the driver branch of the first CUDA toolkit that supports the architecture, from NVIDIA's "CUDA
# Toolkit, Driver, and Architecture Matrix" (https://docs.nvidia.com/datacenter/tesla/drivers/
# cuda-toolkit-driver-and-architecture-matrix.html: Blackwell CUDA 12.8, Hopper and Ada 11.8, Ampere 11.0,
# Turing 10.0, Volta 9.0, Pascal 8.0, Maxwell 6.5) and the toolkit's driver (12.8: 570, 11.8: 520, 11.0: 450,
# 10.0: 410, 9.0: 384, 8.0: 367, 6.5: 340). The collection refuses branches below 550 anyway (NVLink on Ampere).
# RTX 30xx GeForce cards came with 455 (Linux driver 455.23.04); H200 boards came after H100 and are not
# confirmed here before R550, which is the collection's floor.
# max_branch: the last branch that drives the family: "The Release 580 series will be the last to support GPUs
# based on the Maxwell, Pascal, and Volta architectures" (NVIDIA's Unix graphics feature deprecation schedule,
# forums.developer.nvidia.com/t/60588; the same matrix lists R580 as their last driver).
# open_modules: the open kernel modules need Turing or newer (GSP; NVIDIA driver installation guide, "Kernel
# Modules"); "Blackwell and later are only supported by the open kernel modules" (README of driver 580.159.03,
# kernel_open.html).
# cuda: the first CUDA that has kernels for the family; an engine built with an older CUDA has none for it.
# pci_ids: device-ID ranges of display-class functions (PCI class 0x03), from the PCI ID database
# (pciutils/pciids, pci.ids 2026.05.24: GM1xx, GP1xx, GV100, TU1xx, GA1xx, AD10x, GH100, GB1xx/GB2xx chips).
# names: what NVML and nvidia-smi call the boards, for hosts where only names are known.
GPU_FAMILIES = (
    {
        "family": "blackwell", "examples": "RTX 50xx, RTX PRO Blackwell, B200, GB200, B300",
        "min_branch": 570, "max_branch": None, "open_modules": "required", "cuda": "12.8",
        "pci_ids": ((0x2900, 0x2FFF), (0x3180, 0x31FF)),
        "names": r"RTX 50[5-9]0|Blackwell|\bG?B[123]00\b|\bGB10\b",
    },
    {
        "family": "hopper", "examples": "H100, H200, H800, H20, GH200",
        "min_branch": 520, "max_branch": None, "open_modules": "optional", "cuda": "11.8",
        "pci_ids": ((0x2300, 0x23FF),),
        "names": r"\bG?H(100|200|800|20)\b",
    },
    {
        "family": "ada", "examples": "RTX 40xx, RTX 6000 Ada, L4, L40, L40S",
        "min_branch": 520, "max_branch": None, "open_modules": "optional", "cuda": "11.8",
        "pci_ids": ((0x2680, 0x28FF),),
        "names": r"RTX 40[5-9]0|\bAda\b|\bL(2|4|20|40S?)\b",
    },
    {
        "family": "ampere", "examples": "RTX 30xx, RTX A6000, A100, A40, A10",
        "min_branch": 450, "max_branch": None, "open_modules": "optional", "cuda": "11.0",
        "pci_ids": ((0x2080, 0x20FF), (0x2200, 0x22FF), (0x2400, 0x25FF)),
        "names": r"RTX 30[5-9]0|RTX A\d{3,4}|\bA(2|10G?|16|30|40|100|800)\b",
    },
    {
        "family": "turing", "examples": "RTX 20xx, GTX 16xx, TITAN RTX, Quadro RTX, T4",
        "min_branch": 410, "max_branch": None, "open_modules": "optional", "cuda": "10.0",
        "pci_ids": ((0x1E00, 0x1FFF), (0x2180, 0x21FF)),
        "names": r"RTX 20[5-8]0|GTX 16[5-6]0|TITAN RTX|Quadro RTX|\bT(4|400|600|1000)\b",
    },
    {
        "family": "volta", "examples": "V100, TITAN V",
        "min_branch": 384, "max_branch": 580, "open_modules": "unsupported", "cuda": "9.0",
        "pci_ids": ((0x1D80, 0x1DFF),),
        "names": r"V100|TITAN V\b|GV100",
    },
    {
        "family": "pascal", "examples": "GTX 10xx, TITAN Xp, P100, P40",
        "min_branch": 367, "max_branch": 580, "open_modules": "unsupported", "cuda": "8.0",
        "pci_ids": ((0x15F0, 0x15FF), (0x1725, 0x172F), (0x1B00, 0x1D7F)),
        "names": r"GTX 10[5-8]0|TITAN Xp?\b|Tesla P|Quadro P",
    },
    {
        "family": "maxwell", "examples": "GTX 9xx, GTX 750, Tesla M",
        "min_branch": 340, "max_branch": 580, "open_modules": "unsupported", "cuda": "6.5",
        "pci_ids": ((0x1340, 0x15EF), (0x1600, 0x1724), (0x1730, 0x17FF)),
        "names": r"GTX 9[5-8]0|GTX 750|Tesla M|Quadro M",
    },
)
NVIDIA_PCI_VENDOR = 0x10DE
# PCI base class of display controllers: 0x0300 VGA (GeForce, workstation cards), 0x0302 3D (data-center boards).
PCI_DISPLAY_CLASS = 0x03


# ---- parsing -------------------------------------------------------------------------------------------------


def version_tuple(version: Any) -> Optional[Tuple[int, ...]]:
    """'0.26.0' -> (0, 26, 0); '0.8.5.post1' -> (0, 8, 5); None for what is not a release number."""
    match = re.match(r"^\s*v?(\d+(?:\.\d+)+)", str(version if version is not None else ""))
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def release_line(version: Any) -> Optional[str]:
    """'0.26.0' -> '0.26'."""
    parts = version_tuple(version)
    return "%d.%d" % parts[:2] if parts and len(parts) >= 2 else None


def loaded_driver_version(report: Any) -> str:
    """The version in the loaded kernel module's report (/proc/driver/nvidia/version: 'NVRM version: NVIDIA UNIX
    x86_64 Kernel Module  580.95.05  ...' or '... Open Kernel Module for x86_64  580.95.05  ...'); '' for none."""
    match = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", str(report or ""))
    return match.group(1) if match else ""


def driver_branch(driver: Any) -> Optional[int]:
    """The branch of a driver version or branch: '580.159.04' -> 580, 580 -> 580, '' or None -> None."""
    match = re.match(r"^\s*(\d{3,})(?:\.|\s*$)", str(driver if driver is not None else ""))
    return int(match.group(1)) if match else None


def cuda_tuple(cuda: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in cuda.split("."))


# ---- lookups -------------------------------------------------------------------------------------------------


def engine_release(vllm_version: Any) -> Tuple[Optional[Dict[str, Any]], str]:
    """The table row that holds for a vLLM version, and how it was found: 'table', 'newer' (past the newest row,
    whose requirements are assumed), 'older' (before the oldest row: None) or 'unparsable' (None)."""
    wanted = version_tuple(vllm_version)
    if wanted is None:
        return None, "unparsable"
    rows = [row for row in VLLM_RELEASES if version_tuple(row["since"]) <= wanted]
    if not rows:
        return None, "older"
    row = dict(rows[-1])
    row["cuda_major"] = cuda_tuple(row["cuda"])[0]
    row["min_branch"] = CUDA_DRIVER_BRANCH[row["cuda"]]
    newest_line = max(version_tuple(line) for line in VLLM_NEWEST_IN_LINE)
    return row, "newer" if wanted[:2] > newest_line else "table"


def family_by_name(name: Any) -> Optional[Dict[str, Any]]:
    """The family of a GPU by its NVML name ('NVIDIA GeForce RTX 3090' -> ampere); None when unknown."""
    for family in GPU_FAMILIES:
        if re.search(family["names"], str(name or "")):
            return family
    return None


def family_by_pci_id(device_id: Any) -> Optional[Dict[str, Any]]:
    """The family of an NVIDIA display function by its PCI device ID (0x2204 or '0x2204' -> ampere)."""
    try:
        number = device_id if isinstance(device_id, int) else int(str(device_id), 16)
    except ValueError:
        return None
    for family in GPU_FAMILIES:
        if any(low <= number <= high for low, high in family["pci_ids"]):
            return family
    return None


def pci_family(vendor: int, device: int, device_class: int) -> Tuple[bool, Optional[str]]:
    """(is an NVIDIA GPU, its family or None) for one PCI function's vendor, device and class registers."""
    is_gpu = vendor == NVIDIA_PCI_VENDOR and (device_class >> 16) == PCI_DISPLAY_CLASS
    family = family_by_pci_id(device) if is_gpu else None
    return is_gpu, family["family"] if family else None


def family_row(family_name: Any) -> Optional[Dict[str, Any]]:
    return next((family for family in GPU_FAMILIES if family["family"] == family_name), None)


def newest_in_line(line: str) -> str:
    return VLLM_NEWEST_IN_LINE.get(line, line + ".0")


def lines_between(since: str, until: Optional[str]) -> List[str]:
    """The release lines from `since` up to (not including) `until`, among those PyPI has."""
    low = version_tuple(since)[:2]
    high = version_tuple(until)[:2] if until else None
    return [line for line in VLLM_NEWEST_IN_LINE
            if version_tuple(line) >= low and (high is None or version_tuple(line) < high)]


def releases_that_run(branch: Optional[int], families: Sequence[Dict[str, Any]] = ()) -> List[str]:
    """The newest release of every line whose default wheel runs on this branch and has kernels for every family,
    oldest first."""
    if branch is None:
        return []
    found = []
    for index, row in enumerate(VLLM_RELEASES):
        if CUDA_DRIVER_BRANCH[row["cuda"]] > branch:
            continue
        if any(cuda_tuple(row["cuda"]) < cuda_tuple(family["cuda"]) for family in families):
            continue
        until = VLLM_RELEASES[index + 1]["since"] if index + 1 < len(VLLM_RELEASES) else None
        # A row that starts within a line (0.10.2, 0.11.1) shares that line with the row before it.
        for line in lines_between(row["since"], until):
            if release_line(row["since"]) == line and version_tuple(row["since"])[2:] > (0,):
                newest = newest_in_line(line)
                if version_tuple(newest) >= version_tuple(row["since"]):
                    found.append(newest)
            else:
                found.append(newest_in_line(line))
    result = []
    for version in found:  # a line met twice (0.10.0 and 0.10.2 rows) is offered once, as its newest
        line = release_line(version)
        result = [kept for kept in result if release_line(kept) != line] + [version]
    return result


def summarize_versions(versions: Sequence[str]) -> str:
    """'0.8.5.post1, 0.9.2, ..., 0.26.0' shortened to its first two and last three where long."""
    if len(versions) > 6:
        return "%s, %s, ... %s" % (versions[0], versions[1], ", ".join(versions[-3:]))
    return ", ".join(versions)


# ---- verdicts ------------------------------------------------------------------------------------------------


def problem(code: str, message: str, fix: str, value: Any = None, limit: Any = None) -> Dict[str, Any]:
    return {"code": code, "message": message, "value": value, "limit": limit, "fix": fix}


def engine_verdict(vllm_version: Any, driver: Any, gpu_names: Iterable[Any] = ()) -> Dict[str, Any]:
    """Judge a vLLM release against a host's loaded driver and its GPUs (NVML names).

    Returns ``ok`` (no problem), ``problems`` (each refuses: code, message, value, limit, fix), ``notes`` (said,
    not refused), the release row, the branch the engine needs (``required_branch``, the newer of the wheel's
    CUDA and the GPU families), and ``releases_that_run``: the newest release of each line that this driver runs.
    """
    names = [str(name) for name in (gpu_names or [])]
    branch = driver_branch(driver)
    row, found = engine_release(vllm_version)
    gpus = []
    for name in names:
        family = family_by_name(name)
        gpus.append({"name": name, "family": family["family"] if family else None,
                     "min_branch": family["min_branch"] if family else None})
    families = [family_row(gpu["family"]) for gpu in gpus if gpu["family"]]
    problems: List[Dict[str, Any]] = []
    notes: List[Dict[str, Any]] = []

    needs = ([row["min_branch"]] if row else []) + [family["min_branch"] for family in families]
    required = max(needs) if needs else None
    runs = releases_that_run(branch, families)
    alternatives = ("vllm_version to a release driver branch %s runs: %s" % (branch, summarize_versions(runs)) if runs
                    else "nothing else: no vllm_version of the table runs on driver branch %s" % branch)

    if found == "unparsable":
        problems.append(problem(
            "vllm_version_unparsable", "vllm_version %r is not a release number" % (vllm_version,),
            "set vllm_version to one release, for example \"%s\"" % VLLM_RELEASES[-1]["since"], value=vllm_version))
    elif found == "older":
        notes.append(problem(
            "vllm_version_not_in_table",
            "vllm_version %s is older than the compatibility table (%s and newer): its driver needs are not checked"
            % (vllm_version, VLLM_RELEASES[0]["since"]),
            "use %s or newer" % VLLM_RELEASES[0]["since"], value=vllm_version, limit=VLLM_RELEASES[0]["since"]))
    elif found == "newer":
        notes.append(problem(
            "vllm_version_newer_than_table",
            "vllm_version %s is newer than the compatibility table: the needs of %s (torch %s, CUDA %s, driver "
            "branch %d+) are assumed" % (vllm_version, row["since"], row["torch"], row["cuda"], row["min_branch"]),
            "add its row to plugins/module_utils/compat.py once its torch and CUDA are known",
            value=vllm_version, limit=VLLM_RELEASES[-1]["since"]))
    if row and not row["confirmed"]:
        notes.append(problem(
            "cuda_not_confirmed",
            "the CUDA of vLLM %s's default wheel is not confirmed; CUDA %s (driver branch %d+) is assumed"
            % (vllm_version, row["cuda"], row["min_branch"]),
            "check the wheel's libcudart (ldd on vllm/_C*.so) and correct the table", value=row["cuda"]))
    for gpu in gpus:
        if gpu["family"] is None:
            notes.append(problem(
                "gpu_family_unknown", "%s is not in the GPU table: its driver needs are not checked" % gpu["name"],
                "add its family to plugins/module_utils/compat.py", value=gpu["name"]))

    if branch is None:
        problems.append(problem(
            "driver_missing",
            "no NVIDIA driver is loaded, so vllm_version %s cannot be judged%s" % (
                vllm_version, (" (it needs nvidia_driver_branch %d or newer)" % required) if required else ""),
            "run the nvidia_driver role first (site.yml --tags driver; reboot if it asks), with nvidia_driver_branch"
            " %s or newer, then the gates; check that nvidia-smi answers" % (required or "550"),
            value=None, limit=required))
        return _verdict(vllm_version=vllm_version, driver=driver, branch=branch, row=row, gpus=gpus,
                        required=required, runs=runs, problems=problems, notes=notes)

    if row and branch < row["min_branch"]:
        floor = CUDA_MAJOR_FLOOR.get(row["cuda_major"], row["min_branch"])
        how = ("torch will see no GPU at all" if branch < floor else
               "it may start under CUDA minor-version compatibility, but kernels needing the newer PTX JIT fail")
        problems.append(problem(
            "driver_too_old",
            "vllm_version %s ships torch %s with CUDA %s, which needs NVIDIA driver branch %d or newer; this host "
            "runs driver %s (branch %d): %s"
            % (vllm_version, row["torch"], row["cuda"], row["min_branch"], driver, branch, how),
            "set nvidia_driver_branch to %d or newer and update the driver first (site.yml --tags driver, or "
            "rolling_update.yml with rolling_update_driver: true on a serving fleet), or set %s"
            % (max(required or 0, row["min_branch"]), alternatives),
            value=branch, limit=row["min_branch"]))
    for gpu in gpus:
        family = family_row(gpu["family"])
        if family and branch < family["min_branch"]:
            problems.append(problem(
                "driver_too_old_for_gpu",
                "%s (%s) needs NVIDIA driver branch %d or newer; this host runs %s"
                % (gpu["name"], family["family"], family["min_branch"], driver),
                "set nvidia_driver_branch to %d or newer%s and run site.yml --tags driver" % (
                    max(required or 0, family["min_branch"]),
                    " with nvidia_driver_open_kernel_modules: true" if family["open_modules"] == "required" else ""),
                value=branch, limit=family["min_branch"]))
        if family and row and cuda_tuple(row["cuda"]) < cuda_tuple(family["cuda"]):
            problems.append(problem(
                "engine_cuda_too_old_for_gpu",
                "vllm_version %s is built with CUDA %s, which has no kernels for %s (%s needs CUDA %s or newer)"
                % (vllm_version, row["cuda"], gpu["name"], family["family"], family["cuda"]),
                "set %s" % alternatives, value=row["cuda"], limit=family["cuda"]))
    return _verdict(vllm_version=vllm_version, driver=driver, branch=branch, row=row, gpus=gpus,
                    required=required, runs=runs, problems=problems, notes=notes)


def _verdict(*, vllm_version: Any, driver: Any, branch: Optional[int], row: Optional[Dict[str, Any]],
             gpus: List[Dict[str, Any]], required: Optional[int], runs: List[str],
             problems: List[Dict[str, Any]], notes: List[Dict[str, Any]]) -> Dict[str, Any]:
    message = "; ".join(item["message"] + ". Fix: " + item["fix"] for item in problems)
    return {
        "ok": not problems,
        "vllm_version": str(vllm_version),
        "driver_version": str(driver) if driver not in (None, "") else None,
        "driver_branch": branch,
        "release": row,
        "required_branch": required,
        "gpus": gpus,
        "releases_that_run": runs,
        "problems": problems,
        "notes": notes,
        "msg": message,
        "summary": _summary(vllm_version, branch, row, required, problems),
    }


def _summary(vllm_version: Any, branch: Optional[int], row: Optional[Dict[str, Any]], required: Optional[int],
             problems: List[Dict[str, Any]]) -> str:
    """One short cell for a report: 'ok: 0.26.0 needs 580+' / 'fail: 0.26.0 needs 580+, driver 560'."""
    needs = ("vLLM %s needs %d+" % (vllm_version, required)) if required else ("vLLM %s" % vllm_version)
    if not problems:
        return "ok: %s%s" % (needs, "" if row else " (not in the table)")
    if branch is None:
        return "fail: %s, no driver loaded" % needs
    return "fail: %s, driver branch %d" % (needs, branch)


def branch_verdict(branch: Any, gpus: Iterable[Dict[str, Any]], open_kernel_modules: bool) -> Dict[str, Any]:
    """Judge an NVIDIA driver branch (and its kernel-module flavour) against the GPUs found on the PCI bus.

    gpus: dicts with ``family`` (or None when the device ID is not in the table), and ``pci_address`` /
    ``device_id`` to name them. Returns ``ok``, ``problems``, ``notes``, ``families`` and the ``lowest_branch``
    and ``highest_branch`` every GPU accepts.
    """
    wanted = driver_branch(branch)
    gpu_list = list(gpus or [])
    problems: List[Dict[str, Any]] = []
    notes: List[Dict[str, Any]] = []
    known = []
    for gpu in gpu_list:
        label = "%s (10de:%s, %s)" % (gpu.get("pci_address") or "GPU", str(gpu.get("device_id") or "?").replace(
            "0x", ""), gpu.get("family") or "family unknown")
        family = family_row(gpu.get("family"))
        if family is None:
            notes.append(problem(
                "gpu_family_unknown", "%s is not in the GPU table, so nvidia_driver_branch is not checked for it"
                % label, "check NVIDIA's supported-GPU list for branch %s" % wanted, value=gpu.get("device_id")))
            continue
        known.append(family)
        if wanted is not None and wanted < family["min_branch"]:
            problems.append(problem(
                "branch_too_old_for_gpu",
                "nvidia_driver_branch %s is too old for %s: %s needs branch %d or newer"
                % (wanted, label, family["family"], family["min_branch"]),
                "set nvidia_driver_branch to %d or newer" % max(family["min_branch"], 550),
                value=wanted, limit=family["min_branch"]))
        if wanted is not None and family["max_branch"] is not None and wanted > family["max_branch"]:
            problems.append(problem(
                "branch_too_new_for_gpu",
                "nvidia_driver_branch %s no longer supports %s: branch %d is the last for %s"
                % (wanted, label, family["max_branch"], family["family"]),
                "set nvidia_driver_branch to %d (or replace the GPU)" % family["max_branch"],
                value=wanted, limit=family["max_branch"]))
        if family["open_modules"] == "required" and not open_kernel_modules:
            problems.append(problem(
                "open_modules_required",
                "%s runs only with NVIDIA's open kernel modules" % label,
                "set nvidia_driver_open_kernel_modules: true", value=False, limit=True))
        if family["open_modules"] == "unsupported" and open_kernel_modules:
            problems.append(problem(
                "open_modules_unsupported",
                "%s predates Turing and cannot run the open kernel modules" % label,
                "set nvidia_driver_open_kernel_modules: false", value=True, limit=False))
    if not gpu_list:
        notes.append(problem(
            "no_gpu_found", "no NVIDIA display controller is on the PCI bus, so nvidia_driver_branch is not checked"
            " against any GPU", "check that the cards are seated and powered (lspci -d 10de:)"))
    lowest = max([family["min_branch"] for family in known], default=None)
    highest = min([family["max_branch"] for family in known if family["max_branch"] is not None], default=None)
    return {
        "ok": not problems,
        "branch": wanted,
        "open_kernel_modules": bool(open_kernel_modules),
        "gpus": gpu_list,
        "families": sorted({family["family"] for family in known}),
        "lowest_branch": lowest,
        "highest_branch": highest,
        "problems": problems,
        "notes": notes,
        "msg": "; ".join(item["message"] + ". Fix: " + item["fix"] for item in problems),
    }
