"""Atomic writes leave files with the permissions a plain write would give them."""

from __future__ import annotations

import os

import pytest

from gentool.atomic import write_text


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_file_gets_the_mode_the_umask_allows(tmp_path, umask_022):
    write_text(tmp_path / "report.html", "<html></html>")
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "run.json"
    target.write_text("{}")
    target.chmod(0o600)
    write_text(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    assert target.stat().st_mode & 0o777 == 0o600
