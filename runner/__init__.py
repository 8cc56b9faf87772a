"""Pod-side agent of pod-ops: writes and reads run directories (standard library + psutil)."""

__version__ = "0.1.0"
