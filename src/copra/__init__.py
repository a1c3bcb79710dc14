"""copra: a Secure VM Service Module in the style of COCONUT-SVSM, on Python and KVM."""

__version__ = "0.1.0"
