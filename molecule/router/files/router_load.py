"""A bounded streaming load on an OpenAI-compatible endpoint, one record per request.

Standard library only, so it runs on the controller or in a target. Each request streams /v1/completions and is
recorded with its start (seconds after the load's start, `started_at` in the summary), time to first token, end,
token count (the engine's, from the stream's usage event) and outcome; a request that failed is marked as
failed before or after its first token, which is what a router's retry can and cannot save. The load is bounded:
a fixed number of requests, a fixed concurrency, and a timeout per request.

    python3 router_load.py --url http://127.0.0.1:4000/v1 --key KEY --model tiny-llama --requests 40 \
        --concurrency 4 --max-tokens 16 --out load.json
"""

import argparse
import http.client
import json
import statistics
import threading
import time
from urllib.parse import urlparse


def stream_one(url, key, model, prompt, *, max_tokens, timeout, api="completions"):
    """Stream one completion (api: completions or chat); returns (ttft_s or None, tokens, error or None, status)."""
    parsed = urlparse(url)
    connection_class = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parsed.hostname, parsed.port, timeout=timeout)
    # The engine's own count of generated tokens comes in the stream's last event (include_usage): a text event may
    # hold no text (a token that decodes to nothing yet) or several tokens, so counting events is not counting tokens.
    request = {"model": model, "max_tokens": max_tokens, "stream": True, "temperature": 0, "ignore_eos": True,
               "stream_options": {"include_usage": True}}
    if api == "chat":
        request["messages"] = [{"role": "user", "content": prompt}]
    else:
        request["prompt"] = prompt
    body = json.dumps(request)
    started = time.monotonic()
    ttft = None
    tokens = 0
    usage_tokens = None
    try:
        path = parsed.path.rstrip("/") + ("/chat/completions" if api == "chat" else "/completions")
        connection.request("POST", path, body=body,
                           headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
        response = connection.getresponse()
        if response.status != 200:
            return None, 0, "HTTP %d: %s" % (response.status, response.read(300).decode(errors="replace")), \
                response.status
        done = False
        while True:
            line = response.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            event = json.loads(payload)
            if "error" in event:
                return ttft, tokens, "error event: %s" % json.dumps(event["error"])[:300], 200
            if (event.get("usage") or {}).get("completion_tokens") is not None:
                usage_tokens = event["usage"]["completion_tokens"]
            choices = event.get("choices") or []
            if choices and (choices[0].get("text") or (choices[0].get("delta") or {}).get("content")):
                if ttft is None:
                    ttft = time.monotonic() - started
                tokens += 1
        if not done:
            return ttft, tokens, "stream ended before [DONE] after %d tokens" % tokens, 200
        return ttft, tokens if usage_tokens is None else usage_tokens, None, 200
    except (OSError, http.client.HTTPException, ValueError) as error:
        return ttft, tokens, "%s: %s" % (type(error).__name__, error), None
    finally:
        connection.close()


def failed_before_any_reply(status, ttft, error):
    """A failure a client may send again: refused or reset before a reply, or a 5xx before any of the stream."""
    return error is not None and ttft is None and (status is None or status >= 500)


def run_load(url, key, model, *, requests, concurrency, max_tokens, timeout, prompt_prefix="Request",
             api="completions", retries=0):
    """Run `requests` streams, `concurrency` at a time; returns (records, wall_s, started_at).

    retries: how many times a request that failed before any reply is sent again, as the OpenAI SDKs do (twice by
    default); each record counts its retries."""
    records = []
    lock = threading.Lock()
    next_index = [0]
    origin = time.monotonic()
    started_at = time.time()

    def worker():
        while True:
            with lock:
                index = next_index[0]
                if index >= requests:
                    return
                next_index[0] += 1
            prompt = "%s %d: continue this list of words: time year people way day" % (prompt_prefix, index)
            start = time.monotonic() - origin
            retried = 0
            while True:
                ttft, tokens, error, status = stream_one(
                    url, key, model, prompt, max_tokens=max_tokens, timeout=timeout, api=api)
                if retried >= retries or not failed_before_any_reply(status, ttft, error):
                    break
                retried += 1
            record = {"index": index, "start_s": round(start, 3), "end_s": round(time.monotonic() - origin, 3),
                      "ttft_s": None if ttft is None else round(ttft, 4), "tokens": tokens, "status": status,
                      "error": error, "retried": retried}
            with lock:
                records.append(record)

    threads = [threading.Thread(target=worker, daemon=True) for _index in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(records, key=lambda record: record["index"]), time.monotonic() - origin, started_at


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summarize(records, wall_s, started_at):
    ok = [record for record in records if record["error"] is None]
    failed = [record for record in records if record["error"] is not None]
    ttfts = [record["ttft_s"] for record in ok if record["ttft_s"] is not None]
    return {
        "started_at": round(started_at, 3),
        "requests": len(records),
        "ok": len(ok),
        "failed": len(failed),
        "failed_before_first_token": sum(1 for record in failed if record["ttft_s"] is None),
        "failed_while_streaming": sum(1 for record in failed if record["ttft_s"] is not None),
        "ttft_median_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p95_s": percentile(ttfts, 0.95),
        "tokens": sum(record["tokens"] for record in ok),
        "wall_s": round(wall_s, 3),
        "tokens_per_s": round(sum(record["tokens"] for record in ok) / wall_s, 2) if wall_s else None,
        "retried": sum(record.get("retried", 0) for record in records),
        "errors": sorted({record["error"] for record in failed})[:5],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="OpenAI base URL, e.g. http://127.0.0.1:4000/v1")
    parser.add_argument("--key", default="none")
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--prefix", default="Request", help="first word of every prompt (to find them in logs)")
    parser.add_argument("--api", choices=["completions", "chat"], default="completions")
    parser.add_argument("--retries", type=int, default=0,
                        help="send a request that failed before any reply again, up to this many times")
    parser.add_argument("--out", help="write the records and the summary here as JSON")
    args = parser.parse_args()
    records, wall_s, started_at = run_load(args.url, args.key, args.model, requests=args.requests,
                                           concurrency=args.concurrency, max_tokens=args.max_tokens,
                                           timeout=args.timeout, prompt_prefix=args.prefix, api=args.api,
                                           retries=args.retries)
    result = {"summary": summarize(records, wall_s, started_at), "records": records}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
