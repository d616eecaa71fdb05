"""HTTP from inside a scenario's target, for the molecule scenarios' testinfra tests.

What the scenarios repeat: run curl in a container (a testinfra host), keep the body in a file there, and read the
status and the body back. Import it from a scenario's tests with the repository's tests/harness on sys.path.
"""

import json
import shlex


def curl_in(host, url, *args, body_path="/tmp/llmfleet-http-body"):
    """(HTTP status, body text) of curl URL ARGS run on the host; status 0 where nothing answered."""
    command = "curl -sS -o %s -w '%%{http_code}' %s %s" % (
        shlex.quote(body_path), " ".join(shlex.quote(arg) for arg in args), shlex.quote(url))
    status = host.run(command)
    return int(status.stdout or 0), host.file(body_path).content_string


def json_api(host, method, url, token=None, body=None, body_path="/tmp/llmfleet-http-body"):
    """(HTTP status, parsed JSON body or None) of an API call made on the host, with a Bearer token and a JSON
    body where given."""
    args = ["-X", method]
    if token:
        args += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    status, text = curl_in(host, url, *args, body_path=body_path)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None
