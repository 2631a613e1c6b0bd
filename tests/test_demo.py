"""`lora-bot demo`, the README's first command, end to end: the findings and proposals it shows, nothing written."""

from __future__ import annotations

import json

from bot.cli import main

EXPECTED_FINDINGS = {
    ("demo/facechain-style-lora", "rank-mismatch-config"),
    ("demo/pixel-style-sdxl", "rank-mismatch-metadata"),
    ("demo/anime-lines-sd15", "base-model-mismatch"),
    ("demo/old-pickle-adapter", "pickle-only"),
    ("demo/broken-upload", "corrupt-header"),
    ("demo/loha-style", "non-lora-adapter"),
}
EXPECTED_PRS = {"demo/facechain-style-lora", "demo/pixel-style-sdxl", "demo/flux-dog-r32", "demo/loha-style"}
EXPECTED_DISCUSSIONS = {"demo/old-pickle-adapter", "demo/broken-upload", "demo/anime-lines-sd15"}


def test_demo_shows_every_sample_finding_and_proposal_and_writes_nothing(tmp_path, capsys):
    code = main(["demo", "--json", "--samples-dir", str(tmp_path / "samples")])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 0
    assert "dry run: 0 write requests reached the sandbox Hub" in err
    assert "serving 9 sample repos" in err
    findings = {
        (r["repo_id"], f["code"]) for r in report["repos"] for item in r["files"] for f in item["flags"]
    }
    assert findings >= EXPECTED_FINDINGS
    assert not any(repo == "demo/healthy-lora" for repo, _ in findings), "a healthy adapter has no findings"
    assert report["skipped"] == [
        {"repo_id": "demo/no-bots-please", "reason": "opted out in its model card (lora-bot: ignore)"}
    ]
    would_open = {
        (p["repo_id"], p["kind"] == "flags") for p in report["proposals"] if p["status"] == "would-open"
    }
    assert {repo for repo, is_flags in would_open if not is_flags} == EXPECTED_PRS
    assert {repo for repo, is_flags in would_open if is_flags} == EXPECTED_DISCUSSIONS
    assert report["dry_run"] is True and report["stats"]["write_requests"] == 0
    # --samples-dir keeps the repos on disk for `inspect` and `resize`
    assert (tmp_path / "samples" / "demo" / "facechain-style-lora" / "adapter_config.json").is_file()


def test_demo_refuses_a_samples_dir_that_already_holds_repos(tmp_path, capsys):
    (tmp_path / "owner" / "repo").mkdir(parents=True)
    assert main(["demo", "--samples-dir", str(tmp_path)]) == 2
    assert "already holds repos" in capsys.readouterr().err


def test_decisions_are_logged_with_v_and_quiet_without(capsys):
    assert main(["demo"]) == 0
    assert "DRY-RUN" not in capsys.readouterr().err
    assert main(["-v", "demo"]) == 0
    err = capsys.readouterr().err
    assert "DRY-RUN demo/facechain-style-lora: would open a PR" in err
    assert "demo/no-bots-please: skipped, the owner opted out" in err


def test_demo_leaves_nothing_in_the_working_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_cosmetic_trainer_metadata_goes_into_the_card_not_a_rewritten_weight_file(capsys):
    """kohya's ss_network_dim breaks no loader: no PR replaces the weights for it; the card says which rank."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    section = out.split("would open a pull request on demo/pixel-style-sdxl", 1)[1].split(
        "--- would open", 1
    )[0]
    assert "ss\\_network\\_dim says 16 but the weights have rank 8" in section
    assert "binary file pixel_style.safetensors" not in section
