"""Data: loading text datasets and the data stage (embedded corpus or any dataset → train/test).

Cleaning blocks (extract, language, quality, pii, dedup, …) land here as one module each.
"""

from hfllm.data.loading import DataArguments, load_text_dataset, run_data_stage

__all__ = ["DataArguments", "load_text_dataset", "run_data_stage"]
