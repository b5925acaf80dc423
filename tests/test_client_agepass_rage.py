"""A passphrase file made by rage (pyrage) opens with zcopy's streaming
decryption. Alone in its file because rage calibrates scrypt to about a
second of its own time, and opening it costs as much again, more on a busy
machine."""

from __future__ import annotations

import io
import os

import pyrage
import pytest

from zcopy.client import agepass


@pytest.mark.slow
def test_passphrase_file_made_by_rage_decrypts_while_streaming():
    """rage calibrates scrypt to about a second, so this takes a few."""
    data = os.urandom(200_000)  # several full STREAM chunks and a short last one
    sealed = pyrage.passphrase.encrypt(data, "pw")
    out = io.BytesIO()
    agepass.decrypt_io(io.BytesIO(sealed), out, "pw")
    assert out.getvalue() == data
