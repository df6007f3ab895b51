"""Gradio demos: one Blocks app (demos/app.py), one tab per modality with registered models."""
