"""``python -m finetune`` = the ``finetune`` command."""

from finetune.cli import entry

entry()
