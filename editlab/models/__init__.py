"""Model helpers: the world tokenizer and toy-size diffusers components."""
