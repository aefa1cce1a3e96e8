"""finetune: per-task fine-tuning from any pretrained checkpoint, with benchmark validation, best-checkpoint export
and Hub publication. It reuses `pretrain`'s engine, loop, checkpoints and export.

    finetune --init org/restore-edt-b --task sr_x4 --train data/DF2K --val Set5 Set14 --recipe edt --out runs/ft

Python: `finetune.train.run_finetune(FinetuneConfig(...))`, `finetune.recipes.get_recipe`,
`finetune.pairs.scan_training_data` (also `finetune.data`'s), `finetune.init.load_init`, `finetune.export.push_folder`.
Submodules are imported on use: importing `finetune` does not import deepspeed.
"""

from finetune.recipes import get_recipe, list_recipes

__all__ = ["get_recipe", "list_recipes"]
