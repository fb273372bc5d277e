"""The sobert pipeline: stage logic shared by both executors, and the executors themselves."""
