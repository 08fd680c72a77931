"""Task plugins: model + data + metric."""
from profiler.tasks.base import Example, Task, default_cache_dir
from profiler.tasks.glue import MRPC, STSB
from profiler.tasks.sst2 import SST2
from profiler.tasks.text_classification import TextClassification
from profiler.tasks.tiny_synthetic import TinySynthetic

__all__ = ["Example", "MRPC", "SST2", "STSB", "Task", "TextClassification", "TinySynthetic", "default_cache_dir"]
