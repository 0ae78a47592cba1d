"""``minillama course``: the Llama 2 recipe end to end on a TinyWorld, and its report.

* :mod:`.budgets`   what each preset trains for (importable without the pipeline)
* :mod:`.pipeline`  the stages, one after the other, each skipped once its result is there
* :mod:`.report`    ``report.md`` from the stages' results
"""
