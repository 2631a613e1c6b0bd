"""The owners' loop, scripted end to end: `lora-bot serve` under uvicorn, the sandbox Hub sending it webhooks,
and owner, org member and stranger acting with the real huggingface_hub client.

Measured:
- push → PR: from the owner's `upload_folder` call until the bot's PR is listed (webhook path), over N repos;
- per webhook event: requests and write requests of the scan it triggered (the worker's meter);
- per command: the write requests the sandbox received for it (the bot's, not the owner's comment);
- side by side: a webhook-triggered scan of one repo vs a scheduled scan of all N repos (requests).

    python benchmarks/webhook_loop.py [--repos 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.update(
    {
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1",
    }
)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="lora-bot-bench-hf-")

import torch
import uvicorn
from huggingface_hub import HfApi

from bot.config import config_from_mapping
from bot.pipeline import ScanOptions, run_scan
from bot.sandbox import SandboxHub
from bot.sandbox.samples import _card, _peft_unet
from bot.serve import cli as serve_cli

SECRET = "bench-secret"
USERS = {"hf_bot": "lora-bot", "hf_alice": "alice", "hf_bob": "bob", "hf_mallory": "mallory"}


def portrait(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _peft_unet(folder, 4, torch.Generator().manual_seed(0), 8, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    (folder / "README.md").write_bytes(_card({"tags": ["lora", "peft"]}, "# Portrait\n"))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repos", type=int, default=5)
    args = parser.parse_args()
    os.environ["HF_TOKEN"] = "hf_bot"
    scratch = Path(tempfile.mkdtemp(prefix="lora-bot-bench-"))
    folder = portrait(scratch / "upload")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = "http://{}:{}/webhook".format(*sock.getsockname())
    config_path = scratch / "config.yaml"
    settings = {
        "discovery": {
            "queries": [{"filter": [], "author": "alice"}],
            "incremental": False,
            "state_file": str(scratch / "state.json"),
        },
        "proposals": {"cooldown_hours": 0, "max_prs_per_owner": 100},
    }
    config_path.write_text(json.dumps(settings))
    with SandboxHub(
        user="nobody", users=USERS, orgs={"studio": ["bob"]}, webhook_url=url, webhook_secret=SECRET
    ) as hub:
        ns = argparse.Namespace(
            config=str(config_path), endpoint=hub.endpoint, queue_file=scratch / "q.json", dedupe_ttl=3600.0
        )
        app, queue = serve_cli.build(ns, SECRET)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        owner = HfApi(endpoint=hub.endpoint, token="hf_alice")

        def settle() -> None:
            hub.webhooks.flush()
            queue.wait_idle(120)

        push_to_pr = []
        for index in range(args.repos):
            repo_id = f"alice/portrait-{index}"
            owner.create_repo(repo_id.split("/")[1])
            started = time.monotonic()
            owner.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="my LoRA")
            hub.webhooks.flush()
            while not list(owner.get_repo_discussions(repo_id)):
                time.sleep(0.005)
            push_to_pr.append(time.monotonic() - started)
            settle()
        push_jobs = list(queue.done)

        repo_id = "alice/portrait-0"

        def command(token: str, text: str, number: int | None = None) -> dict:
            num = number or max(d.num for d in owner.get_repo_discussions(repo_id))
            before = hub.write_request_count()
            HfApi(endpoint=hub.endpoint, token=token).comment_discussion(repo_id, num, text)
            settle()
            job = queue.done[-1]
            return {
                "command": text,
                "bot_writes": hub.write_request_count() - before - 1,  # minus the comment itself
                "scan_requests": job["requests"],
            }

        commands = [
            command("hf_mallory", "@lora-bot ignore repo"),
            command("hf_alice", "@lora-bot explain rank-mismatch-config"),
            command("hf_alice", "@lora-bot check"),
            command("hf_alice", "@lora-bot variant r8"),
            command("hf_alice", "@lora-bot recreate"),
            command("hf_alice", "@lora-bot ignore"),
            command("hf_alice", "@lora-bot ignore repo"),
        ]
        before = hub.write_request_count()
        owner.upload_file(path_or_fileobj=b"v2", path_in_repo="notes.txt", repo_id=repo_id)
        settle()
        after_opt_out = hub.write_request_count() - before - 2  # minus the owner's preupload and commit

        scheduled = run_scan(
            config_from_mapping(settings), ScanOptions(endpoint=hub.endpoint, token="hf_bot")
        )
        server.should_exit = True
        thread.join(30)

    per_event = [job["requests"] for job in push_jobs]
    print(
        f"push → PR through the webhook ({args.repos} repos): median {statistics.median(push_to_pr):.3f} s, "
        f"max {max(push_to_pr):.3f} s"
    )
    print(
        f"requests per push event (its scan): median {statistics.median(per_event)}, "
        f"writes {statistics.median(j['write_requests'] for j in push_jobs)}"
    )
    print("per command (bot's write requests, requests of the scan the comment's webhook triggered):")
    for entry in commands:
        print(
            f"  {entry['command']:<42} writes {entry['bot_writes']:>2}   scan requests {entry['scan_requests']:>3}"
        )
    print(f"bot writes after `ignore repo` when the owner pushes again: {after_opt_out}")
    print(
        f"side by side: one webhook scan {statistics.median(per_event)} requests vs a scheduled scan of all "
        f"{args.repos} repos {scheduled.stats.requests} requests "
        f"(ratio {scheduled.stats.requests / statistics.median(per_event):.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
