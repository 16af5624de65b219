"""Bundle → image: fetch wheels, render, assemble a deterministic context, build, verify, tag.

The tag is a hash of everything the image is made from (Dockerfile, lock with wheel hashes,
manifest with the source snapshot's digests, shim, base image), so an unchanged bundle is
never rebuilt. The image is built untagged and tagged only after the installed packages
have been checked against the lock: an interrupted or wrong build never carries a tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from reprobox import baseimage, cuda, lock, render, seeding, wheelhouse
from reprobox.bundle import Bundle
from reprobox.engine import ContainerSpec, Engine
from reprobox.errors import BuildVerificationError, BundleError, RenderError
from reprobox.fileio import atomic_write
from reprobox.manifest import Manifest

Log = Callable[[str], None]
# The base image's own installer packages may differ from the captured ones without harm.
_BOOTSTRAP = frozenset({"pip", "setuptools", "wheel"})
_LIST_PACKAGES = (
    "import json, importlib.metadata as m; print(json.dumps(sorted("
    "(d.metadata['Name'], d.version) for d in m.distributions())))"
)


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """The image built for a bundle, recorded in the bundle as `build.json`."""

    tag: str
    base_image: str
    base_python: str
    captured_python: str
    reused: bool = False

    @property
    def python_note(self) -> str | None:
        """A sentence when the image's Python differs from the captured one."""
        if self.base_python == self.captured_python:
            return None
        return (
            f"Python differs: captured {self.captured_python}, "
            f"image {self.base_image} has {self.base_python}"
        )


def build(
    bundle: Bundle,
    engine: Engine,
    log: Log,
    base_image: str | None = None,
    cache: Path | None = None,
) -> BuiltImage:
    """Build (or reuse) the image for `bundle` and record it in the bundle."""
    manifest = bundle.manifest()
    engine.ping()
    cuda_base = None if base_image else cuda.base_image(manifest)  # an explicit base wins
    base = baseimage.choose(engine, manifest.python.version, base_image, log, cuda_base)
    _check_python(manifest, base)
    cache = cache or wheelhouse.default_cache()
    target = _target(manifest, baseimage.glibc_in(engine, base.ref))
    lock_text, wheels = _hashed_lock(bundle, manifest, target, cache, log)
    dockerfile = render.dockerfile(manifest, base.pinned)
    atomic_write(bundle.dockerfile_path, dockerfile)
    base_id = engine.image_id(base.ref)  # a re-made base under the same name is another base
    tag = image_tag(manifest, _fingerprint(bundle, dockerfile, lock_text, base, base_id))
    plan = _Plan(bundle, manifest, dockerfile, lock_text, tag, cache, target, wheels)
    built = BuiltImage(tag, base.ref, base.python_version, manifest.python.version)
    if base.python_version != manifest.python.version:
        log(f"note: {built.python_note}")
    if engine.has_image(tag):
        log(f"image {tag} is up to date (nothing changed since it was built)")
        built = replace(built, reused=True)
    else:
        _build_and_verify(plan, engine, log)
    atomic_write(bundle.build_record_path, json.dumps(asdict(built), indent=2) + "\n")
    return built


def read_built(bundle: Bundle) -> BuiltImage:
    """The image recorded by the last `build` of this bundle."""
    path = bundle.build_record_path
    try:
        return BuiltImage(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise BundleError(
            f"{bundle.path}: no image built yet",
            hint="run `reprobox build` (or `reprobox run`) first",
        ) from None
    except (ValueError, TypeError) as exc:
        raise BundleError(
            f"{path}: unreadable ({exc})", hint="run `reprobox build` again"
        ) from None


def image_tag(manifest: Manifest, fingerprint: str) -> str:
    """`reprobox/<project>:<content hash>`."""
    name = re.sub(r"[^a-z0-9._-]+", "-", manifest.run.project.lower()).strip("-._") or "run"
    return f"reprobox/{name}:{fingerprint[:16]}"


def _check_python(manifest: Manifest, base: baseimage.BaseImage) -> None:
    captured = manifest.python.version.split(".")[:2]
    if base.python_version.split(".")[:2] != captured:
        raise RenderError(
            f"base image {base.ref} has Python {base.python_version}, the run used "
            f"{manifest.python.version}; wheels for one do not install on the other",
            hint=f"pass --base-image with Python {'.'.join(captured)}, or run "
            f"`reprobox base --python {'.'.join(captured)}`",
        )


def _hashed_lock(
    bundle: Bundle, manifest: Manifest, target: wheelhouse.Target, cache: Path, log: Log
) -> tuple[str, dict[str, wheelhouse.Wheel] | None]:
    """The lock with wheel hashes: reused from the bundle when complete (no wheels fetched
    yet), else written from freshly fetched wheels (returned, so they are fetched once)."""
    if bundle.lock_path.is_file():
        existing = bundle.lock_path.read_text()
        if lock.is_hashed(existing, manifest):
            return existing, None
    wheels = wheelhouse.fetch(lock.locked_packages(manifest), target, cache, log)
    text = lock.dumps(manifest, {name: [w.sha256] for name, w in wheels.items()})
    atomic_write(bundle.lock_path, text)
    return text, wheels


def _target(manifest: Manifest, glibc: str) -> wheelhouse.Target:
    xy = ".".join(manifest.python.version.split(".")[:2])  # equal to the base's (_check_python)
    return wheelhouse.Target(xy, manifest.python.abi_tag, manifest.system.arch, glibc)


def _fingerprint(
    bundle: Bundle, dockerfile: str, lock_text: str, base: baseimage.BaseImage, base_id: str
) -> str:
    """Everything the image is made from; the source snapshot enters through the manifest."""
    digest = hashlib.sha256()
    manifest_text = bundle.manifest_path.read_text()
    for part in (dockerfile, lock_text, manifest_text, base.ref, base_id, base.python_version):
        digest.update(part.encode() + b"\0")
    for path in sorted(seeding.SHIM_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything a build needs once the lock and the Dockerfile are settled."""

    bundle: Bundle
    manifest: Manifest
    dockerfile: str
    lock_text: str
    tag: str
    cache: Path
    target: wheelhouse.Target
    wheels: dict[str, wheelhouse.Wheel] | None  # None: the lock was reused, wheels not fetched yet


def _build_and_verify(plan: _Plan, engine: Engine, log: Log) -> None:
    with tempfile.TemporaryDirectory(prefix="reprobox-context-") as tmp:
        context = Path(tmp) / "context"
        _assemble(context, plan, log)
        tar_path = Path(tmp) / "context.tar"
        write_context_tar(context, tar_path)
        log(f"building {plan.tag} from a {tar_path.stat().st_size / 1e6:.1f} MB context")
        labels = {"reprobox.run-id": plan.bundle.run_id, "reprobox.tag": plan.tag}
        image_id = engine.build(tar_path, labels, log)
    try:
        verify_packages(engine, image_id, plan.lock_text)
    except BaseException:
        engine.remove_image(image_id)  # an unverified image must not linger, tagged or not
        raise
    engine.tag(image_id, plan.tag)
    log(f"built {plan.tag}")


def _assemble(context: Path, plan: _Plan, log: Log) -> None:
    """Lay out the build context from an allowlist: never the raw project folder."""
    context.mkdir()
    (context / "Dockerfile").write_text(plan.dockerfile)
    (context / "requirements.lock").write_text(plan.lock_text)
    shutil.copy2(plan.bundle.manifest_path, context / "manifest.yaml")
    (context / "shim").mkdir()
    for path in seeding.SHIM_DIR.glob("*.py"):
        shutil.copy2(path, context / "shim" / path.name)
    if plan.bundle.source_dir.is_dir():
        shutil.copytree(plan.bundle.source_dir, context / "source")
    else:
        (context / "source").mkdir()
    _link_wheels(context / "wheels", plan, log)


def _link_wheels(folder: Path, plan: _Plan, log: Log) -> None:
    folder.mkdir()
    wheels = plan.wheels or _cached_wheels(plan, log)
    for wheel in wheels.values():
        try:
            os.link(wheel.path, folder / wheel.path.name)
        except OSError:  # another filesystem: copy instead
            shutil.copy2(wheel.path, folder / wheel.path.name)


def _cached_wheels(plan: _Plan, log: Log) -> dict[str, wheelhouse.Wheel]:
    """Wheels for a lock written earlier, each checked against the hash the lock pins."""
    pins = lock.loads(plan.lock_text)
    packages = lock.locked_packages(plan.manifest)
    wheels = wheelhouse.fetch(packages, plan.target, plan.cache, log)
    for name, wheel in wheels.items():
        if wheel.sha256 not in pins[name].hashes:
            raise BuildVerificationError(
                f"{wheel.path.name}: sha256 {wheel.sha256[:16]}… is not the one in "
                "requirements.lock",
                hint="the wheel changed since the lock was written; "
                "delete requirements.lock from the bundle to re-pin deliberately",
            )
    return wheels


def verify_packages(engine: Engine, image: str, lock_text: str) -> None:
    """Check the distributions installed in `image` against the lock."""
    installed = _installed(engine, image)
    pins = {name: pin.version for name, pin in lock.loads(lock_text).items()}
    wrong = [
        f"{n} {installed.get(n, 'missing')} (locked {v})"
        for n, v in sorted(pins.items())
        if installed.get(n) != v and n not in _BOOTSTRAP
    ]
    extra = sorted(set(installed) - set(pins) - _BOOTSTRAP)
    if wrong or extra:
        problems = wrong + [f"{n} {installed[n]} (not in the lock)" for n in extra]
        raise BuildVerificationError(
            f"image {image[:19]} does not match requirements.lock: {'; '.join(problems[:5])}",
            hint="the base image may carry its own packages; try another --base-image",
        )


def _installed(engine: Engine, image: str) -> Mapping[str, str]:
    chunks: list[bytes] = []
    spec = ContainerSpec(
        image=image,
        argv=("python", "-I", "-c", _LIST_PACKAGES),
        env={},
        workdir="/tmp",
        timeout_s=120,
    )
    result = engine.run(spec, chunks.append)
    text = b"".join(chunks).decode(errors="replace").strip().splitlines()
    if result.exit_code != 0 or not text:
        raise BuildVerificationError(
            f"could not list the packages in image {image[:19]}", hint="\n".join(text[-3:]) or None
        )
    return {wheelhouse.normalise(n): v for n, v in json.loads(text[-1])}


def write_context_tar(context: Path, tar_path: Path) -> None:
    """Tar `context` deterministically: sorted names, zero times and owners, fixed modes."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(context.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(context).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            executable = path.is_dir() or os.access(path, os.X_OK)
            info.mode = 0o755 if executable else 0o644
            if path.is_file():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
