"""Secrets never reach a record: env allowlist, argv masking, text redaction, URL stripping."""

from __future__ import annotations

import pytest

from reprobox.capture.environ import (
    capture_env,
    has_secret,
    mask_argv,
    redact_bytes,
    redact_text,
    strip_url_credentials,
)

# Realistic-length canaries in each known format; built by joining so no scanner flags this file.
GH = "ghp_" + "CANARY0123456789abcdefghijklmnopqrstu"
GH_PAT = "github_pat_" + "11CANARY0_abcdefghijklmnopqrstuvwxyz"
GL = "glpat-" + "CANARYabcdefghij1234"
HF = "hf_" + "CANARYabcdefghijklmnopqrstuvwxyz1234"
OPENAI = "sk-" + "proj-CANARYabcdefghijklmnop123456"
SLACK = "xoxb-" + "123456789012-CANARYabcdef"
AWS = "AKIA" + "CANARY0123456789"[:16]
JWT = "eyJ" + "hbGciOiJIUzI1NiJ9.eyJ" + "zdWIiOiJDQU5BUlkifQ.CANARYsignature_abc"
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACANARY\n"
       "-----END OPENSSH PRIVATE KEY-----")
TOKENS = [GH, GH_PAT, GL, HF, OPENAI, SLACK, AWS, JWT]


@pytest.mark.parametrize("token", TOKENS)
def test_redact_text_masks_known_token_formats(token: str) -> None:
    text = f"before {token} after"
    assert redact_text(text) == "before *** after"
    assert has_secret(text)


def test_redact_text_masks_pem_block_urls_and_headers() -> None:
    text = (f"key:\n{PEM}\nafter\n"
            "curl -H 'Authorization: Bearer CANARYbearer123' https://bob:CANARYpw@example.org/x\n"
            "headers = {'Authorization': 'token CANARYtok'}\n"
            'db_password = "CANARYhunter2"\n')
    redacted = redact_text(text)
    assert "CANARY" not in redacted
    assert "after" in redacted and "https://***@example.org/x" in redacted


def test_redact_text_leaves_ordinary_ml_code_alone() -> None:
    code = ("tokens = tokenizer(text, max_tokens=512)\npad_token = tokenizer.eos_token\n"
            "from sklearn import task\nurl = 'https://example.org/data.csv'\nhf_hub_download()\n"
            "git@github.com:org/repo.git\n")
    assert redact_text(code) == code
    assert not has_secret(code)


def test_strip_url_credentials() -> None:
    assert strip_url_credentials("https://user:ghp_SECRETCANARY@host/x.git") == "https://host/x.git"
    assert strip_url_credentials(f"https://{GH}@github.com/o/r") == "https://github.com/o/r"
    assert strip_url_credentials("git+https://u:p@h.org/r.git@v1") == "git+https://h.org/r.git@v1"
    assert strip_url_credentials("git@github.com:org/repo.git") == "git@github.com:org/repo.git"
    assert strip_url_credentials("ssh://git@host/r.git") == "ssh://git@host/r.git"
    assert strip_url_credentials("ssh://git:CANARY@host/r.git") == "ssh://host/r.git"
    assert strip_url_credentials("https://host/path?q=a@b") == "https://host/path?q=a@b"
    assert strip_url_credentials("/local/path") == "/local/path"


def test_capture_env_three_tiers() -> None:
    environ = {
        "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "4", "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "TORCH_CUDNN_V8_API_ENABLED": "1", "XLA_FLAGS": "--xla_gpu_deterministic_ops=true",
        "TOKENIZERS_PARALLELISM": "false", "LANG": "C.UTF-8",
        "HF_TOKEN": HF, "WANDB_API_KEY": "CANARYwandb", "AWS_SECRET_ACCESS_KEY": "CANARYaws",
        "TORCH_AUTH_TOKEN": "CANARYtorch",  # allowlisted prefix, sensitive name
        "HF_ENDPOINT": "https://u:CANARYpw@hub.example.org",  # allowlisted, value flagged
        "PATH": "/usr/bin", "LD_LIBRARY_PATH": "/x", "PYTHONPATH": "/y", "VIRTUAL_ENV": "/v",
        "HF_HOME": "/home/me/.cache/hf", "HOME": "/root", "SHELL": "/bin/bash",
        "MY_SETTING": "1",
    }
    values, redacted, not_captured = capture_env(environ, extra_names=["MY_SETTING", "PATH"])
    assert values == {
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "LANG": "C.UTF-8", "MY_SETTING": "1",
        "OMP_NUM_THREADS": "4", "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false",
        "TORCH_CUDNN_V8_API_ENABLED": "1", "XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}
    assert redacted == ("AWS_SECRET_ACCESS_KEY", "HF_ENDPOINT", "HF_TOKEN", "TORCH_AUTH_TOKEN",
                        "WANDB_API_KEY")
    assert not_captured == len(environ) - len(values) - len(redacted) == 7
    assert "CANARY" not in repr((values, redacted))


def test_capture_env_sensitive_names_win_over_extra_names() -> None:
    values, redacted, _ = capture_env({"DB_PASSWORD": "CANARY"}, extra_names=["DB_PASSWORD"])
    assert values == {} and redacted == ("DB_PASSWORD",)


def test_mask_argv_flags_assignments_and_scanned_values() -> None:
    argv = ["python", "train.py", "--hf-token", "CANARY1", "--api-key=CANARY2", "--password",
            "CANARY3", "--wandb_key", "CANARY4", "HF_TOKEN=CANARY5", "db.password=CANARY6",
            "--resume-from=https://me:CANARY7@store.example.org/ckpt", GH, "--apiKey", "CANARY8"]
    masked = mask_argv(argv)
    assert masked == ("python", "train.py", "--hf-token", "***", "--api-key=***", "--password",
                      "***", "--wandb_key", "***", "HF_TOKEN=***", "db.password=***",
                      "--resume-from=https://***@store.example.org/ckpt", "***", "--apiKey", "***")
    assert "CANARY" not in " ".join(masked)


def test_mask_argv_keeps_ordinary_arguments() -> None:
    argv = ["python", "train.py", "--tokenizer", "gpt2", "--max-tokens", "512", "--epochs", "3",
            "tokenizer=bert", "--no-auth", "--lr=0.1", "--author", "me"]
    assert mask_argv(argv) == tuple(argv)


def test_mask_argv_secret_flag_followed_by_flag_masks_nothing_else() -> None:
    assert mask_argv(["run", "--token", "--epochs", "3"]) == ("run", "--token", "--epochs", "3")


@pytest.mark.parametrize("argv", [
    ["model.num_key_value_heads=8"], ["--sort-key", "loss"], ["--token-budget", "100"],
    ["--auth-mode", "none"], ["--key-column=label"], ["--num-key-value-heads", "8"],
    ["--secret-sharing-rounds", "3"], ["--passwordless", "yes"], ["--sortKey", "loss"],
])
def test_mask_argv_keeps_ml_arguments_whose_secret_word_is_not_last(argv: list[str]) -> None:
    assert mask_argv(argv) == tuple(argv)


@pytest.mark.parametrize("flag", [
    "--api-key", "--hf-token", "db.password", "--access-key", "--private-key", "--secret-key",
    "--apiKey", "--pwd", "--db_passwd", "--gcp.credentials", "--ssh-passphrase", "--apikey",
])
def test_mask_argv_masks_flags_whose_last_word_is_a_secret(flag: str) -> None:
    if flag.startswith("-"):
        assert mask_argv([flag, "CANARY"]) == (flag, "***")
    assert mask_argv([f"{flag}=CANARY"]) == (f"{flag}=***",)


def test_mask_argv_scans_values_of_ordinary_flags_for_token_shapes() -> None:
    assert mask_argv(["--sort-key", HF, f"x={GH}"]) == ("--sort-key", "***", "x=***")


def test_redact_bytes_masks_tokens_and_keeps_binary_bytes() -> None:
    data = b"\x00\xff\xfe loss=0.5 " + HF.encode() + b" \x89PNG\r\n\x1a\n caf\xc3\xa9"
    assert redact_bytes(data) == b"\x00\xff\xfe loss=0.5 *** \x89PNG\r\n\x1a\n caf\xc3\xa9"
