"""Files and folders every stage shares: atomic writes, the output guard, run directories, checkpoint shards,
weight identity, names read from data, and the one model loader."""
