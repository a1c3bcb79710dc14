"""Guests: KVM VMs other than the SVSM's own, booted and run on the SVSM's behalf.

This layer sits above the kernel (hw <- kernel <- vmm <- attest/cli): it boots PVH
kernels (``pvh``, with ``descriptors``), decodes guest exits into plain values
(``exits``), emulates each guest vCPU's x2APIC (``x2apic``, docs/apic.md) and completes
the instructions KVM's emulator cannot run on PVM hosts (``complete``). Two users of
those: ``guest`` runs one guest on its own with copra's Python devices (``uart``,
``ports``; `copra guest`, docs/guests.md), and the VMM interface gives guests made at
boot to the SVSM's user-mode VMM (``service``: class 2 of the syscall table, registered
with the kernel at boot; ``vm``, ``vcpu``, ``runpage``, ``msr``; docs/vmm.md).
"""
