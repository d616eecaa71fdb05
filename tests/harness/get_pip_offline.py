"""Stand-in for ansible-test's pip bootstrap script, for machines that reach PyPI but not ci-files.

ansible-test runs its cached get-pip script with pip-install arguments inside a fresh venv that has no
pip. This does the same from the standard library: ensurepip installs the bundled pip, then pip
installs what was asked for (the pinned pip release among it) from the configured index.
"""

import ensurepip
import os
import subprocess
import sys

# get-pip's own flags; plain pip does not know them.
GET_PIP_ONLY_FLAGS = ("--no-setuptools", "--no-wheel")

# ansible-test clears the environment; trust the operating system's CA bundle as the machine does,
# rather than only the certificates bundled with the bootstrap pip.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
environment = dict(os.environ)
if "PIP_CERT" not in environment and os.path.exists(SYSTEM_CA_BUNDLE):
    environment["PIP_CERT"] = SYSTEM_CA_BUNDLE

ensurepip.bootstrap(upgrade=True)
arguments = [argument for argument in sys.argv[1:] if argument not in GET_PIP_ONLY_FLAGS]
if arguments and arguments[0] != "install":
    arguments.insert(0, "install")
sys.exit(subprocess.call([sys.executable, "-m", "pip", *arguments], env=environment))
