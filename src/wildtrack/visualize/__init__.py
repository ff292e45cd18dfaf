"""Pictures for people: retrieval panels, t-SNE maps, Grad-CAM overlays and the HTML report.

Figures are drawn on standalone ``matplotlib.figure.Figure`` objects (Agg canvas), never through pyplot's
global state, so they are safe in a server thread and never try to open a window. Submodules are imported
explicitly (``wildtrack.visualize.gradcam`` pulls in TensorFlow; the others do not).
"""
