"""Datasets: the procedural landscapes and folders of images and videos."""
