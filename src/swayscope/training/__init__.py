"""Training LoRA adapters offline on the CPU: the loop, checkpoints, control adapters.

Used by the tiny model builder (its adapter), the SmolLM2 demo (a trained adapter
and its two controls) and anything that needs adapters trained for a given number
of steps. Importing this package is light: torch, transformers and peft are
imported inside the functions that use them.
"""
