"""Guests: KVM VMs other than the SVSM's own, booted and run on the SVSM's behalf.

This layer sits above the kernel (hw <- kernel <- vmm <- attest/cli) and knows nothing of
the SVSM's processes yet: it boots PVH kernels (``pvh``, with ``descriptors``), runs their
vCPUs and decodes their exits into plain values (``guest``, ``exits``), emulates the few
devices a test guest needs (``uart``, ``ports``), completes the instructions KVM's
emulator cannot run on PVM hosts (``complete``) and emulates each guest vCPU's x2APIC
(``x2apic``, docs/apic.md). docs/guests.md describes what boots and
what is missing.
"""
