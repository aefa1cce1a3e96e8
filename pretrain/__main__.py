from pretrain.cli import entry

entry()
