"""A bioimage.io package may only use the files inside it (issue 28, 2 and the zip bomb):
weights and attachments at URLs, at absolute paths or at ``..`` paths out of the package (a
folder or a zip), or behind a link out of the folder, are refused with one message; nothing is
fetched (a local web server records whether it was asked) and bioimage.io's download cache is
never created. A zip that would unpack to too much is refused before anything is inflated."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
from hostile_helpers import assert_ok, assert_user_error, invoke
from hostile_models import copy_package, edit_rdf, send_bytes, serving, sha256, zip_folder


@pytest.fixture
def package(exported_package: Path, tmp_path: Path) -> Path:
    return copy_package(exported_package, tmp_path / "package")


@pytest.fixture(autouse=True)
def bioimageio_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """bioimage.io's download cache, moved where the test sees whether it is created."""
    from bioimageio.spec._internal._settings import settings

    cache = tmp_path / "bioimageio-cache"
    monkeypatch.setattr(settings, "cache_path", cache)
    return cache


def predict(model: Path, image: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return invoke("predict", model, "-i", image, "-o", out, *extra)


def only_onnx(rdf: dict, source: str, digest: str | None) -> None:  # type: ignore[type-arg]
    onnx = rdf["weights"]["onnx"]
    onnx.pop("parent", None)
    onnx["source"] = source
    if digest is None:
        onnx.pop("sha256", None)
    else:
        onnx["sha256"] = digest
    rdf["weights"] = {"onnx": onnx}


@pytest.mark.parametrize("what", ["weights", "preset"])
def test_files_at_a_url_are_neither_fetched_nor_run(
    what: str, package: Path, tmp_path: Path, one_image: Path, bioimageio_cache: Path
) -> None:
    name = "weights.onnx" if what == "weights" else "preset.toml"
    data = (package / name).read_bytes()
    with serving(send_bytes(data)) as server:
        url = f"{server.url}/{name}"

        def change(rdf: dict) -> None:  # type: ignore[type-arg]
            if what == "weights":
                only_onnx(rdf, url, sha256(data))
            else:
                rdf["attachments"] = [{"source": url, "sha256": sha256(data)}]
                rdf["config"]["bioim2im"]["preset"] = url

        edit_rdf(package, change)
        (package / name).unlink()
        result = predict(package, one_image, tmp_path / "out")
        assert_user_error(result, url, "inside")
        assert server.requests == []
    assert not bioimageio_cache.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
@pytest.mark.parametrize("what", ["weights", "preset"])
def test_files_outside_a_package_folder_are_not_read(
    what: str, where: str, package: Path, tmp_path: Path, one_image: Path
) -> None:
    name = "weights.onnx" if what == "weights" else "preset.toml"
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    (package / name).rename(outside)
    data = outside.read_bytes()
    if where == "link":
        (package / name).symlink_to(outside)
        source = name
    else:
        source = "../elsewhere/" + name if where == "parent" else str(outside)

    def change(rdf: dict) -> None:  # type: ignore[type-arg]
        if what == "weights":
            only_onnx(rdf, source, sha256(data))
        else:
            rdf["attachments"] = [{"source": source, "sha256": sha256(data)}]
            rdf["config"]["bioim2im"]["preset"] = source

    edit_rdf(package, change)
    result = predict(package, one_image, tmp_path / "out")
    assert_user_error(result, "outside the package")


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_files_outside_a_package_zip_are_not_read(
    where: str, package: Path, tmp_path: Path, one_image: Path
) -> None:
    data = (package / "weights.onnx").read_bytes()
    outside = tmp_path / "weights.onnx"
    outside.write_bytes(data)
    (package / "weights.onnx").unlink()
    source = "../weights.onnx" if where == "parent" else str(outside)
    edit_rdf(package, lambda rdf: only_onnx(rdf, source, sha256(data)))
    # A member named "../weights.onnx" too, as a zip may hold.
    archive = zip_folder(package, tmp_path / "model.zip", {"../weights.onnx": data})
    result = predict(archive, one_image, tmp_path / "out")
    assert_user_error(result, "model.zip", "outside the package")


def test_a_package_whose_files_changed_since_it_was_made_is_refused(
    package: Path, tmp_path: Path, one_image: Path
) -> None:
    (package / "preset.toml").write_text(
        (package / "preset.toml").read_text() + "\n# changed\n", encoding="utf-8"
    )
    result = predict(package, one_image, tmp_path / "out")
    assert_user_error(result, "preset.toml", "SHA-256")


def test_a_zip_bomb_is_refused_before_it_is_inflated(
    package: Path, tmp_path: Path, one_image: Path
) -> None:
    """200 MiB of zeros packed into 0.2 MiB: refused by its ratio, whatever the size limit."""
    archive = zip_folder(package, tmp_path / "bomb.zip")
    with (
        zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as handle,
        handle.open("padding.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(200):
            member.write(bytes(1 << 20))
    result = predict(archive, one_image, tmp_path / "out")
    assert_user_error(result, "bomb.zip", "times")


def test_the_size_a_package_may_unpack_to_is_bounded_and_can_be_raised(
    package: Path, tmp_path: Path, one_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = zip_folder(package, tmp_path / "model.zip")
    monkeypatch.setenv("BIOIM2IM_MAX_PACKAGE_MB", "0.01")
    result = predict(archive, one_image, tmp_path / "out")
    assert_user_error(result, "model.zip", "0.01 MiB", "BIOIM2IM_MAX_PACKAGE_MB")
    monkeypatch.setenv("BIOIM2IM_MAX_PACKAGE_MB", "100")
    assert_ok(predict(archive, one_image, tmp_path / "out"))


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_a_description_whose_aliases_expand_to_millions_is_refused(
    form: str, package: Path, tmp_path: Path, one_image: Path
) -> None:
    """A "billion laughs" of YAML aliases (9^7 values) in the description."""
    lines = ['  l0: &l0 ["ha", "ha", "ha", "ha", "ha", "ha", "ha", "ha", "ha"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 8)]
    text = (package / "rdf.yaml").read_text(encoding="utf-8")
    (package / "rdf.yaml").write_text(text + "laughs:\n" + "\n".join(lines) + "\n")
    model = package if form == "folder" else zip_folder(package, tmp_path / "model.zip")
    started = time.monotonic()
    result = predict(model, one_image, tmp_path / "out")
    assert_user_error(result, "aliases")
    assert time.monotonic() - started < 10


def test_a_package_folders_files_are_bounded_too(
    package: Path, tmp_path: Path, one_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(package / "weights.onnx", "r+b") as handle:  # sparse: 64 MiB more, instantly
        handle.truncate(64 << 20)
    edit_rdf(package, lambda rdf: only_onnx(rdf, "weights.onnx", None))
    monkeypatch.setenv("BIOIM2IM_MAX_PACKAGE_MB", "16")
    result = predict(package, one_image, tmp_path / "out")
    assert_user_error(result, "weights.onnx", "16 MiB", "BIOIM2IM_MAX_PACKAGE_MB")
