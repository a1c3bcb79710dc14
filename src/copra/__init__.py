"""copra: a Secure VM Service Module in the style of COCONUT-SVSM, kernel in Python, hardware on KVM."""

__version__ = "0.1.0"
