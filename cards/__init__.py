"""Data that configures the library: the model-card template (``model_card.md.jinja``)."""

from __future__ import annotations

from importlib import resources

__all__ = ["model_card_template"]


def model_card_template() -> str:
    """The Jinja template of the ``README.md`` model card written by ``save_pretrained``."""
    return resources.files(__name__).joinpath("model_card.md.jinja").read_text(encoding="utf-8")
