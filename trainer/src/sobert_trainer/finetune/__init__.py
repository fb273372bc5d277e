"""Finetuning on the four StackOverflow tasks with Ray Train."""
