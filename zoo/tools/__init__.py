"""The usage tools, apart from the core: they reach a family only through what ``zoo.api.ZooModel``
declares and load models by name through ``zoo.registry``.

- ``zoo.tools.batch``: many files -> Parquet token shards (``tokenzoo batch``), resumable, multi-process.
- ``zoo.tools.finetune``: one accelerate loop over ``training_loss`` (``tokenzoo finetune``).
- ``zoo.tools.compare``: several models of one modality, one table (``tokenzoo compare``).
- ``zoo.tools.demo``: every bundled model on bundled samples, one table (``tokenzoo demo``).
- ``zoo.tools.inputs``: files, folders, globs and ``@list`` files -> paths.
- ``zoo.tools.options``: the model options every subcommand shares (``--device``, ``--dtype``, ``--revision``).
"""
