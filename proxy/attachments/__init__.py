"""Attachments: fetch, safety, cache, memory budget and large files (SPEC §9).

This package ``__init__`` stays import-light: ``api/attachment_fields.py`` imports
``safety`` from here, and must not pull ``requests`` or ``fsspec`` with it.
The send path uses ``proxy.attachments.pipeline``.
"""
