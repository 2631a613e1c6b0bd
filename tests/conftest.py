"""Test-wide setup. The Hub is never reached: every Hub test talks to the sandbox Hub on 127.0.0.1.

huggingface_hub reads some of these at import time, so they are set before any test module imports it.
"""

import os
import tempfile

_HF_HOME = tempfile.mkdtemp(prefix="lora-bot-hf-home-")
os.environ.update(
    {
        "HF_HUB_DISABLE_XET": "1",  # the sandbox speaks the classic LFS protocol, not Xet
        "HF_HOME": _HF_HOME,  # no real token or cache is read
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
    os.environ.pop(_name, None)


import pytest  # noqa: E402 — after the environment above, which huggingface_hub reads at import


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """The sandbox's built-in sample repos on disk, written once. The sandbox only reads them."""
    from bot.sandbox.samples import write_sample_repos

    root = tmp_path_factory.mktemp("samples")
    write_sample_repos(root)
    return root


@pytest.fixture(scope="module", autouse=True)
def _module_working_directory(tmp_path_factory):
    """A module-scoped fixture (one sandbox scan shared by a module's tests) is made before any test's own
    folder exists. It runs here, never in the checkout, where two test workers would share one census store
    and read each other's runs."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("module-cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path, monkeypatch):
    """Each test runs in its own folder: the scan's default census store (.lora-bot/census.sqlite, relative
    to the working directory) must not carry one test's inspections into another, or into the checkout."""
    monkeypatch.chdir(tmp_path)
