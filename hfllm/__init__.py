"""hfllm: the Hugging Face–native way to build a language model end to end.

clean text → BPE tokenizer → pretrain (transformers Trainer) → evaluate (bits per byte),
each stage a standard HF directory plus a manifest under runs/<name>/<stage>/.
"""

__version__ = "0.1.0"
