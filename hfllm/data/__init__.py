"""Data: reading raw text, the cleaning blocks (datatrove steps), and the data stage.

Modules, in pipeline order: loading (input, quarantine), extract, urls, domains, language, filters
(rules per domain), pii, dedup, quality (classifier), decontaminate, mixture; blocks (how a block
runs through `datasets`), stage (the data stage), distributed (the same blocks under datatrove's
executors).
"""

from hfllm.data.loading import load_text_dataset
from hfllm.data.stage import DataArguments, run_data_stage

__all__ = ["DataArguments", "load_text_dataset", "run_data_stage"]
