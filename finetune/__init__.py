"""Fine-tuning workflow kit around the LLaMA-Factory Web UI.

The light core (data checks, registration, layout, launcher, run discovery, doctor) imports
without torch, transformers or llamafactory; heavy imports live inside the functions that train
or infer.
"""

__version__ = "0.1.0"
