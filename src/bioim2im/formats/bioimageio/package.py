"""The files of a bioimage.io package, read within bounds: its description (refused before it
expands past :data:`MAX_DESCRIPTION_VALUES` values) and the files it names, from its zip or its
folder and nothing else (:class:`PackageFiles`)."""

from __future__ import annotations

import hashlib
import posixpath
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from bioim2im.errors import UserError, first_line

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


class PackageFiles:
    """The files of a package: members of its zip, or files under its folder; nothing else.

    A package names its files (weights, attachments) relative to its description. A URL, an
    absolute path, a ``..`` that leads out, or a link out of the folder is refused: a package
    may only use what it holds, and bioim2im fetches nothing a package names. A zip is bounded
    before anything is inflated (:func:`bioim2im.formats.archives.check_zip`). Each file read is
    checked against the SHA-256 the description gives, and goes into :attr:`digest`.
    """

    def __init__(self, path: Path) -> None:
        from bioim2im.formats.archives import check_zip

        self.path = path
        self.archive: zipfile.ZipFile | None = None
        self.root: Path | None = None
        self.digest = hashlib.sha256()
        if path.is_dir():
            self.root = path
            self.rdf: Path = path / next(n for n in RDF_NAMES if (path / n).is_file())
        elif path.suffix.lower() in (".yaml", ".yml"):
            self.root, self.rdf = path.parent, path
        else:
            try:
                self.archive = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise UserError(
                    f"{path} is not a readable zip package: {first_line(exc)}"
                ) from None
            try:
                check_zip(self.archive, str(path))
            except UserError:
                self.archive.close()
                raise
            with open(path, "rb") as handle:
                while piece := handle.read(1 << 20):
                    self.digest.update(piece)

    def __enter__(self) -> PackageFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.archive is not None:
            self.archive.close()

    def description(self) -> Any:
        """The package's description (model format 0.5; older ones converted), read offline."""
        try:
            from bioimageio.spec import InvalidDescr, ValidationContext, load_model_description
            from bioimageio.spec.model.v0_5 import ModelDescr
        except ImportError:
            raise UserError(
                f"{self.path}: reading bioimage.io packages needs bioimageio.spec: pip install "
                "'bioim2im[bioimageio]'"
            ) from None
        if self.archive is None:
            text = self._file(self.rdf.name, "description")
            self.digest.update(text)
        else:
            text = self._member(_rdf_member(self.archive, self.path), "description")
        _check_yaml(text, self.path)
        source: Any = self.archive if self.archive is not None else self.rdf
        # No I/O checks (they would fetch what the package names) and no cache.
        context = ValidationContext(perform_io_checks=False, disable_cache=True)
        try:
            with context:
                descr = load_model_description(
                    source, perform_io_checks=False, format_version="latest"
                )
        except Exception as exc:  # bioimageio.spec refuses what is not a model description
            raise UserError(
                f"{self.path} is not a readable bioimage.io model: {first_line(exc)}"
            ) from None
        if isinstance(descr, InvalidDescr) or not isinstance(descr, ModelDescr):
            summary = getattr(descr, "validation_summary", None)
            errors = (
                [f"{d.name}: {e.msg}" for d in summary.details for e in d.errors] if summary else []
            )
            raise UserError(
                f"{self.path} is not a valid bioimage.io model (format 0.5):", errors[:10]
            )
        return descr

    def read(self, source: Any, sha256: Any, what: str) -> bytes:
        """The bytes of the file a package names as ``source`` (its ``what`` in messages)."""
        name = self.member(source, what)
        data = self._member(name, what) if self.archive is not None else self._file(name, what)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != str(sha256):
            raise UserError(
                f"{self.path}: its {what} {name} does not have the SHA-256 its description "
                "gives (changed after the package was made?)"
            )
        if self.archive is None:  # a zip's bytes are in the digest already
            self.digest.update(data)
        return data

    def local_folder(self, source: Any, what: str) -> Path | None:
        """The folder holding the file ``source`` names, for a package that is a folder."""
        if self.root is None:
            return None
        return (self.root / self.member(source, what)).parent

    def label(self, source: Any) -> str:
        """How messages name a file of the package."""
        if self.root is None:
            return f"{self.path} ({source})"
        return str(self.root / str(source))

    def member(self, source: Any, what: str) -> str:
        """``source`` as a path inside the package, or a refusal saying why it is not one."""
        text = str(source)
        if "://" in text or text.lower().startswith(("http:", "https:", "file:")):
            raise UserError(
                f"{self.path}: its {what} is at {text}; a package may only use files inside "
                "itself (bioim2im fetches nothing a package names)"
            )
        relative = PurePosixPath(text.replace("\\", "/"))
        if relative.is_absolute() or PureWindowsPath(text).drive:
            raise UserError(
                f"{self.path}: its {what} is {text}, outside the package; a package may only "
                "use files inside itself"
            )
        parts = [p for p in relative.parts if p not in ("", ".")]
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else 1
            if depth < 0:
                raise UserError(
                    f"{self.path}: its {what} {text} leads outside the package; a package may "
                    "only use files inside itself"
                )
        if not parts:
            raise UserError(f"{self.path}: its {what} names no file ({text!r})")
        return posixpath.normpath("/".join(parts))

    def _member(self, name: str, what: str) -> bytes:
        assert self.archive is not None
        try:
            return self.archive.read(name)
        except KeyError:
            raise UserError(f"{self.path}: its {what} {name} is not in the package") from None
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
            raise UserError(
                f"{self.path}: its {what} {name} cannot be read: {first_line(exc)}"
            ) from None

    def _file(self, name: str, what: str) -> bytes:
        assert self.root is not None
        root = self.root.resolve()
        target = (root / name).resolve()
        if not target.is_relative_to(root):
            raise UserError(
                f"{self.path}: its {what} {name} links to {target}, outside the package; a "
                "package may only use files inside itself"
            )
        if not target.is_file():
            raise UserError(f"{self.path}: its {what} {name} is not a file in the package")
        from bioim2im.formats.archives import LIMIT_VARIABLE, limit_bytes

        if target.stat().st_size > limit_bytes():
            raise UserError(
                f"{self.path}: its {what} {name} is larger than the {limit_bytes() >> 20} MiB "
                f"bioim2im reads from a package ({LIMIT_VARIABLE}=N raises the limit to N MiB)"
            )
        try:
            return target.read_bytes()
        except OSError as exc:
            raise UserError(f"{self.path}: its {what} {name} cannot be read: {exc}") from None


MAX_DESCRIPTION_VALUES = 100_000
"""Most values a package's description may hold once its YAML aliases are expanded (an
exported one holds a few hundred)."""


def _rdf_member(archive: zipfile.ZipFile, path: Path) -> str:
    """The description's name in a zip package, as bioimageio.spec finds it."""
    names = sorted(archive.namelist())
    for wanted in (*RDF_NAMES, ".bioimageio.yaml"):
        for name in names:
            if name == wanted or (wanted.startswith(".") and name.endswith(wanted)):
                return name
    raise UserError(f"{path}: the zip holds no rdf.yaml or bioimageio.yaml")


def _check_yaml(data: bytes, path: Path) -> None:
    """Refuse a description whose YAML aliases expand to more than
    :data:`MAX_DESCRIPTION_VALUES` values (a "billion laughs"), before anything expands them."""
    try:
        from ruyaml import YAML
        from ruyaml.error import YAMLError
    except ImportError:  # bioimageio.spec brings ruyaml; without it nothing reads the package
        return
    try:
        root = YAML(typ="safe").compose(data.decode("utf-8", "replace"))
    except (YAMLError, ValueError, RecursionError):
        return  # bioimageio.spec says what is wrong with it
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a node that refers to itself counts once
        total = 1
        if isinstance(node.value, list):
            for item in node.value:
                pair = item if isinstance(item, tuple) else (item,)
                total += sum(size(n) for n in pair)
                if total > MAX_DESCRIPTION_VALUES:
                    break
        sizes[id(node)] = total
        return total

    try:
        values = size(root) if root is not None else 0
    except RecursionError:
        raise UserError(f"{path}: its description nests too deeply") from None
    if values > MAX_DESCRIPTION_VALUES:
        raise UserError(
            f"{path}: its description expands to more than {MAX_DESCRIPTION_VALUES} values "
            "(YAML aliases repeating each other)"
        )
