"""The data stage: ``kolm data build RECIPE.yaml --output DIR`` and ``kolm data inspect DIR``.

Modules, in pipeline order: :mod:`.config` (typed recipe), :mod:`.sources` (resolve and stream inputs),
:mod:`.clean` (normalisation, PII, filter measures), :mod:`.filters` (the quality filters, one class per drop
reason, in order), :mod:`.process` (worker tasks), :mod:`.dedup` (MinHash LSH, key sets), :mod:`.scan` (phase 1
driver: pool, dedup decisions, spills, checkpoints), :mod:`.mix` (token budgets, exact language shares),
:mod:`.pack` (train shards and validation splits), :mod:`.build` (orchestration, manifest) and :mod:`.inspect`.
Recipes live in ``data_recipes/``.
"""
