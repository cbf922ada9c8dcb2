"""Filesystem confinement and filename cleaning (SPEC §9.3 rule 1, §9.6 rules 1 and 3)."""

from __future__ import annotations

import os

import pytest

from proxy.attachments.safety import (
    DISABLED,
    INVALID_PATH,
    OUTSIDE,
    PathRefused,
    clean_filename,
    confined_path,
    md5_marker,
)


@pytest.fixture
def roots(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    (allowed / "sub").mkdir(parents=True)
    other.mkdir()
    (allowed / "sub" / "a.pdf").write_bytes(b"a")
    (other / "secret.txt").write_bytes(b"s")
    return allowed, other


def refusal(path, dirs) -> str:
    with pytest.raises(PathRefused) as caught:
        confined_path(path, dirs)
    return caught.value.reason


def test_a_path_inside_an_allowed_directory_resolves_to_itself(roots) -> None:
    allowed, _ = roots
    assert confined_path(str(allowed / "sub" / "a.pdf"), (str(allowed),)) == str(
        allowed / "sub" / "a.pdf"
    )


def test_a_relative_path_resolves_against_the_first_directory(roots) -> None:
    allowed, other = roots
    assert confined_path("sub/a.pdf", (str(allowed), str(other))) == str(allowed / "sub" / "a.pdf")


def test_dot_dot_out_of_the_directory_is_refused(roots) -> None:
    allowed, _ = roots
    assert refusal(
        str(allowed / "sub" / ".." / ".." / "other" / "secret.txt"), (str(allowed),)
    ) == (OUTSIDE)
    assert refusal("../other/secret.txt", (str(allowed),)) == OUTSIDE


def test_a_symlink_leading_out_is_refused(roots) -> None:
    allowed, other = roots
    os.symlink(other / "secret.txt", allowed / "link.txt")
    os.symlink(other, allowed / "dirlink")
    assert refusal(str(allowed / "link.txt"), (str(allowed),)) == OUTSIDE
    assert refusal(str(allowed / "dirlink" / "secret.txt"), (str(allowed),)) == OUTSIDE


def test_an_absolute_path_elsewhere_is_refused(roots) -> None:
    allowed, _ = roots
    assert refusal("/etc/passwd", (str(allowed),)) == OUTSIDE


def test_a_sibling_directory_sharing_a_prefix_is_outside(tmp_path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files-private").mkdir()
    assert refusal(str(tmp_path / "files-private" / "x"), (str(tmp_path / "files"),)) == OUTSIDE


def test_no_allowed_directories_disables_the_mode() -> None:
    assert refusal("/srv/x", ()) == DISABLED


def test_a_nul_byte_is_an_invalid_path(roots) -> None:
    allowed, _ = roots
    assert refusal(str(allowed) + "/a\x00b", (str(allowed),)) == INVALID_PATH


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("report_{MD5:abc123}.pdf", "report.pdf"),
        ("{MD5:ABC123}_report.pdf", "report.pdf"),
        ("a__{MD5:ff}__b.txt", "a_b.txt"),
        ("plain__name_.txt", "plain__name_.txt"),  # no marker: underscores kept
        ("../../etc/passwd", "....etcpasswd"),
        ("dir\\file.txt", "dirfile.txt"),
        ("tab\there\x7f.txt", "tabhere.txt"),
        ("ünïcødé.pdf", "ünïcødé.pdf"),
        ("..", "attachment"),
        ("{MD5:abc}", "attachment"),
        ("/", "attachment"),
    ],
)
def test_filenames_are_cleaned(name: str, cleaned: str) -> None:
    assert clean_filename(name) == cleaned


def test_the_md5_marker_is_read_in_lower_case() -> None:
    assert md5_marker("report_{MD5:ABCDEF0123}.pdf") == "abcdef0123"
    assert md5_marker("report.pdf") is None
    assert md5_marker("report_{MD5:xyz}.pdf") is None
