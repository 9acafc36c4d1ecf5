"""Engine backends behind one protocol (base.py), found by name through registry.py."""
