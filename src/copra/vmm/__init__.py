"""Guests: the VMM side of the kernel (VM and vCPU objects, the emulated x2APIC, IRQ objects)."""
