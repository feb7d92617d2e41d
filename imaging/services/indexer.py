"""Entry point of the DICOM receiver's indexer process (`receiver.Receiver`): a fresh interpreter
that sets Django up before it imports anything with models, then runs `receiver.index_loop`."""

from __future__ import annotations


def index_forever(work, setup: dict, parent: int) -> None:
    import django

    django.setup()
    from imaging.services.receiver import index_loop

    index_loop(work, setup, parent)
