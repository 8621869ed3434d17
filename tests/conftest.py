"""Shared pytest configuration: tests run on the CPU with tiny models and small simulated granules."""

import pytest

from tempocodec.runtime import filehash


@pytest.fixture(scope="session", autouse=True)
def file_hash_cache(tmp_path_factory):
    """The record of hashed model files (:mod:`tempocodec.runtime.filehash`) in a directory of this test run, for
    this process and the subprocesses of tests, never the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(filehash.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        patch.setattr(filehash, "_records", None)
        patch.setattr(filehash, "_unsaved", set())
        yield
