"""The router's configuration as LiteLLM loads it: the role's full file less the drained workstations.

Run by the router's systemd unit before each start and reload (as the router's user, with the router's venv):

    router_config.py apply --base /etc/llmfleet/router/upstreams.yaml \
        --drained /var/lib/llmfleet/router/drained.json --out /var/lib/llmfleet/router/config.yaml
    router_config.py check FILE     # the role validates a new file with LiteLLM's own Router before installing it
    router_config.py drain|undrain --drained FILE --host NAME   # the drain entry points, one locked update

A drained workstation's deployments (model_info.id is its inventory name) are left out. A drain that would leave a
model with no workstation is refused, and so is a drained name that is no deployment: the reload then fails and
the router keeps serving from the configuration it had.
"""

import argparse
import fcntl
import json
import os
import sys
import tempfile

import yaml


class ConfigError(Exception):
    """A configuration the router must not load; the message says why and what to do."""


def read_drained(path):
    try:
        with open(path, encoding="utf-8") as handle:
            drained = json.load(handle)
    except FileNotFoundError:
        return []
    if not isinstance(drained, list) or not all(isinstance(name, str) for name in drained):
        raise ConfigError("%s must hold a JSON list of workstation names, not %r" % (path, drained))
    return drained


def without_drained(config, drained):
    """The configuration with the drained workstations' deployments left out."""
    deployments = config.get("model_list") or []
    names = {str((deployment.get("model_info") or {}).get("id")) for deployment in deployments}
    unknown = sorted(set(drained) - names)
    if unknown:
        raise ConfigError("drained workstation(s) %s are not upstreams of the router: undrain them"
                          % ", ".join(unknown))
    kept = [deployment for deployment in deployments
            if str((deployment.get("model_info") or {}).get("id")) not in set(drained)]
    for model in sorted({deployment["model_name"] for deployment in deployments}):
        if not any(deployment["model_name"] == model for deployment in kept):
            raise ConfigError("draining %s would leave model %s with no workstation: undrain another host serving it "
                              "first" % (", ".join(sorted(drained)), model))
    result = dict(config)
    result["model_list"] = kept
    return result


def apply(base, drained_path, out):
    with open(base, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    effective = without_drained(config, read_drained(drained_path))
    directory = os.path.dirname(os.path.abspath(out))
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".config-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            yaml.safe_dump(effective, handle, sort_keys=False)
        os.chmod(temporary, 0o600)
        os.replace(temporary, out)
    except BaseException:
        os.unlink(temporary)
        raise
    return effective


def update_drained(path, host, action):
    """Add (drain) or remove (undrain) one name under a lock, so hosts draining at once lose no update.

    Returns True when the file changed. The file stays readable by the router's group (the caller's umask is not).
    """
    with open(path + ".lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        drained = set(read_drained(path))
        updated = drained | {host} if action == "drain" else drained - {host}
        if updated == drained:
            return False
        temporary = path + ".new"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(sorted(updated), handle)
            handle.write("\n")
        # Owned as before, or, for a new file, by its directory's group (the router's).
        stats = os.stat(path) if os.path.exists(path) else os.stat(os.path.dirname(os.path.abspath(path)))
        os.chown(temporary, os.getuid() if not os.path.exists(path) else stats.st_uid, stats.st_gid)
        os.chmod(temporary, 0o640)
        os.replace(temporary, path)
        return True


def check(path):
    """Load the file as LiteLLM's proxy would and build its Router: a bad deployment fails here, not at start."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not (config.get("general_settings") or {}).get("master_key"):
        raise ConfigError("%s has no general_settings.master_key: the router would serve without a key" % path)
    from litellm import Router  # noqa: PLC0415 (a heavy import, needed by the check only)

    Router(model_list=config["model_list"], **(config.get("router_settings") or {}))
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    apply_parser = commands.add_parser("apply")
    apply_parser.add_argument("--base", required=True)
    apply_parser.add_argument("--drained", required=True)
    apply_parser.add_argument("--out", required=True)
    check_parser = commands.add_parser("check")
    check_parser.add_argument("path")
    for action in ("drain", "undrain"):
        drain_parser = commands.add_parser(action)
        drain_parser.add_argument("--drained", required=True)
        drain_parser.add_argument("--host", required=True)
    args = parser.parse_args()
    try:
        if args.command in ("drain", "undrain"):
            changed = update_drained(args.drained, args.host, args.command)
            sys.stdout.write("%s %s\n" % ("changed" if changed else "unchanged", args.host))
        elif args.command == "apply":
            effective = apply(args.base, args.drained, args.out)
            served = sorted({str(deployment["model_info"]["id"]) for deployment in effective["model_list"]})
            sys.stdout.write("router serves from %s\n" % ", ".join(served))
        else:
            config = check(args.path)
            sys.stdout.write("%d deployments of %d models\n" % (
                len(config["model_list"]), len({deployment["model_name"] for deployment in config["model_list"]})))
    except (ConfigError, OSError, yaml.YAMLError, KeyError) as error:
        sys.stderr.write("router configuration refused: %s\n" % error)
        sys.exit(1)


if __name__ == "__main__":
    main()
