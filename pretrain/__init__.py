"""pretrain: webdataset shards, the streaming multi-task pipeline, the DeepSpeed engine and loop, export.

    pretrain shards SRC 'shards/train-%06d.tar'
    pretrain run --recipe smoke --data 'shards/train-{000000..000003}.tar' --out runs/smoke
    pretrain export runs/smoke out/smoke

Python: `pretrain.recipes.get_recipe`, `pretrain.data.DataStream`, `pretrain.engine.Trainer`,
`pretrain.loop.train_loop` (reused by `finetune`), `pretrain.export.export_checkpoint`.
Submodules are imported on use: importing `pretrain` does not import deepspeed or webdataset.
"""

from pretrain.recipes import Recipe, get_recipe, list_recipes

__all__ = ["Recipe", "get_recipe", "list_recipes"]
