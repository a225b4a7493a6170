"""Agents (model runners): each one file behind `ModelRunner`."""
