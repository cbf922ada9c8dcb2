"""Bounce and PEC receipt handling (SPEC §11, §12).

``parse`` and ``pec`` are pure: bytes in, frozen results out. ``imap`` is the
one module that talks IMAP (over ``imaplib``) and translates its failures into
``imap.ImapError``. ``mailbox`` is the pure decision of what to flag and record
for one handled mail. The actors (``actors/bounce.py``, ``actors/pec.py``) wire
them to the store.
"""
