"""Keep secrets out of everything reprobox records: env allowlist, argv masking, text redaction."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MASK = "***"

# Recorded with their value (after the value scanner) because they change what a run computes.
ALLOWED_NAMES = frozenset({
    "PYTHONHASHSEED", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE", "PYTHONUTF8",
    "PYTHONIOENCODING", "PYTHONWARNINGS", "PYTHONOPTIMIZE",
    "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING",
    "CUDA_DEVICE_ORDER", "CUDA_MODULE_LOADING", "NVIDIA_TF32_OVERRIDE",
    "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS", "GOTO_NUM_THREADS", "XLA_FLAGS",
    "TOKENIZERS_PARALLELISM", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC",
    "LC_COLLATE", "TZ",
})
ALLOWED_PREFIXES = (
    "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "NPY_", "TF_", "XLA_", "JAX_", "TORCH_",
    "PYTORCH_", "CUDNN_", "CUBLAS_", "NCCL_", "HF_", "TRANSFORMERS_", "REPROBOX_",
)
# Prefix matches that name host paths (HF_HOME, TORCH_HOME): they describe the machine,
# not the experiment, and would break a replay if carried into the image.
_HOST_PATH_SUFFIXES = ("_HOME", "_PATH", "_DIR", "_CACHE", "_ROOT", "_FILE")
# Never recorded, even when asked for by name: they describe the host, not the experiment.
NEVER_CAPTURED = frozenset({
    "PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
    "PYTHONUSERBASE", "VIRTUAL_ENV", "CONDA_PREFIX",
})

# BuildKit-style name heuristic; substrings on purpose (HFTOKEN, OAUTH_...).
_SENSITIVE_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PWORD|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH"
    r"|(?:^|_)KEY(?:_|$)|(?:^|_)PAT(?:_|$)", re.IGNORECASE)
_NOT_SENSITIVE = frozenset({"TOKENIZERS_PARALLELISM"})
# The last word of an argv flag that marks its value as a secret (--hf-token, db.password);
# only the last word, so --token-budget, --auth-mode and num_key_value_heads stay readable.
_SECRET_LAST_WORDS = frozenset({"token", "secret", "secrets", "password", "passwd", "pwd",
                                "apikey", "credential", "credentials", "passphrase"})
# "key" alone is a dict key or a sort key; it is a secret only after one of these words.
_SECRET_KEY_QUALIFIERS = frozenset({"api", "access", "private", "secret", "wandb"})
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][\w.-]*)=(.*)$", re.DOTALL)

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#@'\"<>]+@")
_TOKEN_PATTERNS = (
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    r"(?<![\w-])gh[pousr]_[A-Za-z0-9]{20,}",
    r"(?<![\w-])github_pat_[A-Za-z0-9_]{20,}",
    r"(?<![\w-])glpat-[A-Za-z0-9_-]{20,}",
    r"(?<![\w-])hf_[A-Za-z0-9]{20,}",
    r"(?<![\w-])sk-[A-Za-z0-9_-]{20,}",
    r"(?<![\w-])xox[abposr]-[A-Za-z0-9-]{10,}",
    r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
    r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
)
_TOKENS = re.compile("|".join(f"(?:{p})" for p in _TOKEN_PATTERNS))
# Header values: "Authorization: Bearer abc", "Authorization=token abc", bare "Bearer abc".
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic|token|digest)\s+)?[^\s\"',;]+")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}")
# KEY = "value" assignments in code and configs for names that can only hold a secret.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(\b[\w.-]*(?:password|passwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token"
    r"|access[_-]?token)[\w.-]*[\"']?\s*[:=]\s*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;]+)")


def is_sensitive_name(name: str) -> bool:
    """True when an env var or flag name suggests it holds a credential."""
    return name.upper() not in _NOT_SENSITIVE and bool(_SENSITIVE_NAME.search(name))


def is_secret_option(name: str) -> bool:
    """True for an argv option or override name whose last word names a secret: --api-key."""
    words = [word for word in re.split(r"[-_.]+", _CAMEL_BOUNDARY.sub("_", name.lstrip("-")))
             if word]
    if not words:
        return False
    last = words[-1].lower()
    if last in _SECRET_LAST_WORDS:
        return True
    return last == "key" and len(words) > 1 and words[-2].lower() in _SECRET_KEY_QUALIFIERS


def has_secret(text: str) -> bool:
    """True when the value scanner finds anything credential-shaped in `text`."""
    return redact_text(text) != text


def redact_text(text: str) -> str:
    """Replace URL userinfo, auth headers, known token formats, PEM keys and JWTs with ***."""
    text = _TOKENS.sub(MASK, text)
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    text = _AUTH_HEADER.sub(rf"\1{MASK}", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    return _SECRET_ASSIGNMENT.sub(rf"\1{MASK}", text)


def redact_bytes(data: bytes) -> bytes:
    """`redact_text` over raw output; undecodable bytes pass through unchanged."""
    text = data.decode("utf-8", "surrogateescape")
    return redact_text(text).encode("utf-8", "surrogateescape")


def strip_url_credentials(url: str) -> str:
    """Drop userinfo from `scheme://user:pass@host/...`; keep scp-style `git@host:path` as is.

    An ssh URL keeps a plain user name (`ssh://git@host/x`), which ssh needs and is no secret.
    """
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)$", url, re.DOTALL)
    if not match or "@" not in match.group(2):
        return url
    scheme, netloc, rest = match.groups()
    userinfo, _, host = netloc.rpartition("@")
    keep_user = ("ssh" in scheme.lower() and ":" not in userinfo
                 and not has_secret(userinfo) and not is_sensitive_name(userinfo))
    return f"{scheme}{userinfo}@{host}{rest}" if keep_user else f"{scheme}{host}{rest}"


def capture_env(
    environ: Mapping[str, str], extra_names: Sequence[str] = ()
) -> tuple[dict[str, str], tuple[str, ...], int]:
    """Split an environment into (allowlisted values, names kept without value, count dropped)."""
    extra = frozenset(extra_names)
    captured: dict[str, str] = {}
    redacted: list[str] = []
    for name, value in environ.items():
        if name in NEVER_CAPTURED:
            continue
        if is_sensitive_name(name):
            redacted.append(name)
        elif name in extra or _allowlisted(name):
            if has_secret(value):
                redacted.append(name)
            else:
                captured[name] = value
    not_captured = len(environ) - len(captured) - len(redacted)
    return dict(sorted(captured.items())), tuple(sorted(redacted)), not_captured


def _allowlisted(name: str) -> bool:
    if name in ALLOWED_NAMES:
        return True
    return name.startswith(ALLOWED_PREFIXES) and not name.endswith(_HOST_PATH_SUFFIXES)


def mask_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """Mask values of secret-named flags (`--token X`, `--token=X`, `db.password=X`) and secrets."""
    masked: list[str] = []
    value_is_secret = False
    for arg in argv:
        if value_is_secret and not arg.startswith("--"):
            masked.append(MASK)
            value_is_secret = False
            continue
        value_is_secret = False
        flag, eq, _ = arg.partition("=")
        if eq and (flag.startswith("-") or _ASSIGNMENT.match(arg)) and is_secret_option(flag):
            masked.append(f"{flag}={MASK}")
        elif arg.startswith("-") and not eq and is_secret_option(arg):
            masked.append(arg)
            value_is_secret = True
        else:
            masked.append(redact_text(arg))
    return tuple(masked)
